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
  tags                          = local.tags

  # Managed VNet: computes reach the workspace's storage, Key Vault and ACR through managed private endpoints.
  managed_network {
    isolation_mode = "AllowInternetOutbound"
  }

  identity {
    type = "SystemAssigned"
  }
}

# The storage account allows no shared keys: the workspace's own datastores must use identities.
# azurerm has no argument for this workspace property, hence azapi.
resource "azapi_update_resource" "aml_identity_datastores" {
  type        = "Microsoft.MachineLearningServices/workspaces@2024-04-01"
  resource_id = azurerm_machine_learning_workspace.main.id
  body = {
    properties = {
      systemDatastoresAuthMode = "identity"
    }
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
