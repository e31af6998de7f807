# No content trust: Azure refuses it on new registries (ContentTrustUnsupported, Docker Content Trust is
# being retired) and azurerm deprecates trust_policy_enabled. Images are signed with Notation instead
# (infra/README.md); retention purges untagged manifests.
resource "azurerm_container_registry" "main" {
  name                          = "acr${local.compact}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  sku                           = "Premium"
  admin_enabled                 = false
  anonymous_pull_enabled        = false
  data_endpoint_enabled         = true
  public_network_access_enabled = var.enable_private_endpoints ? false : true
  zone_redundancy_enabled       = true
  quarantine_policy_enabled     = false
  retention_policy_in_days      = 30
  tags                          = local.tags
}

# The kubelet identity pulls images: no registry credentials anywhere.
resource "azurerm_role_assignment" "kubelet_acr_pull" {
  scope                            = azurerm_container_registry.main.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}

# Azure ML jobs on the training cluster pull their environment image with the cluster's identity.
resource "azurerm_role_assignment" "training_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.training.principal_id
  principal_type       = "ServicePrincipal"
}
