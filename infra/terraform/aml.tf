resource "azurerm_machine_learning_workspace" "main" {
  name                          = "mlw-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  application_insights_id       = azurerm_application_insights.main.id
  key_vault_id                  = azurerm_key_vault.main.id
  storage_account_id            = azurerm_storage_account.models.id
  container_registry_id         = azurerm_container_registry.main.id
  public_network_access_enabled = var.enable_private_endpoints ? false : true
  high_business_impact          = var.environment == "prod"
  v1_legacy_mode_enabled        = false
  # The storage account allows no shared keys: the workspace's own datastores authenticate with identities.
  storage_account_access_type = "Identity"
  tags                        = local.tags

  # Managed VNet: computes reach the workspace's storage, Key Vault and ACR through managed private
  # endpoints that Azure ML creates itself for its associated resources (no user-defined outbound rules).
  managed_network {
    isolation_mode = "AllowInternetOutbound"
  }

  identity {
    type = "SystemAssigned"
  }
}

# Training runs here; it scales to zero nodes when no job is queued.
resource "azurerm_machine_learning_compute_cluster" "training" {
  name                          = "cpu-training"
  location                      = azurerm_resource_group.main.location
  machine_learning_workspace_id = azurerm_machine_learning_workspace.main.id
  vm_priority                   = var.environment == "prod" ? "Dedicated" : "LowPriority"
  vm_size                       = var.aml_compute_vm_size
  local_auth_enabled            = false
  node_public_ip_enabled        = false
  ssh_public_access_enabled     = false
  tags                          = local.tags

  scale_settings {
    min_node_count                       = 0
    max_node_count                       = var.aml_compute_max_nodes
    scale_down_nodes_after_idle_duration = "PT5M"
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.training.id]
  }
}

# Identity-mode datastores: jobs read inputs and write outputs on the workspace's blob datastores
# (azureml-blobstore-<workspace id>, created by the workspace) with the cluster's identity. The containers
# are named by Azure ML, so the role is on the account; it includes the models container, which training
# publishes to anyway. The scoring identities keep container-scoped read access (identity.tf).
resource "azurerm_role_assignment" "training_workspace_storage" {
  scope                = azurerm_storage_account.models.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.training.principal_id
  principal_type       = "ServicePrincipal"
}

# Application Insights accepts only Entra ID-authenticated telemetry (local auth off): the workspace and
# the training jobs publish with their identities.
resource "azurerm_role_assignment" "app_insights_publisher" {
  for_each = {
    workspace = azurerm_machine_learning_workspace.main.identity[0].principal_id
    training  = azurerm_user_assigned_identity.training.principal_id
  }
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = each.value
  principal_type       = "ServicePrincipal"
}
