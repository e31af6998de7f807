resource "azurerm_key_vault" "main" {
  name                          = "kv${local.compact}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = var.enable_private_endpoints ? false : true
  tags                          = local.tags

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    ip_rules                   = var.storage_allowed_ip_ranges
    virtual_network_subnet_ids = [azurerm_subnet.aks.id]
  }
}

# Audit log of every data-plane access (secret, key and certificate reads and writes) and policy change.
resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  name                       = "diag-kv-to-log-analytics"
  target_resource_id         = azurerm_key_vault.main.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "audit"
  }
}
