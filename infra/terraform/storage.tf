# The model store: azureblob://<models container>/<name>/<version>/{model.onnx,manifest.json}.
resource "azurerm_storage_account" "models" {
  name                              = "st${local.compact}"
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  access_tier                       = "Hot"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  public_network_access_enabled     = var.enable_private_endpoints ? false : true
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false
  tags                              = local.tags

  blob_properties {
    versioning_enabled  = true
    change_feed_enabled = true

    delete_retention_policy {
      days = var.blob_soft_delete_days
    }

    container_delete_retention_policy {
      days = var.blob_soft_delete_days
    }
  }

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices", "Logging", "Metrics"]
    ip_rules                   = var.storage_allowed_ip_ranges
    virtual_network_subnet_ids = [azurerm_subnet.aks.id]
  }

  sas_policy {
    expiration_period = "00.01:00:00"
  }
}

resource "azurerm_storage_container" "models" {
  name                  = var.models_container_name
  storage_account_id    = azurerm_storage_account.models.id
  container_access_type = "private"
}

# Versions are immutable folders; a new version never overwrites an old one, so what ages here are the
# versions themselves (by creation time) and any overwritten blob versions (noncurrent versions).
resource "azurerm_storage_management_policy" "models" {
  storage_account_id = azurerm_storage_account.models.id

  rule {
    name    = "model-versions-hot-cool-archive"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${var.models_container_name}/"]
    }

    actions {
      base_blob {
        tier_to_cool_after_days_since_creation_greater_than    = var.model_tier_cool_after_days
        tier_to_archive_after_days_since_creation_greater_than = var.model_tier_archive_after_days
      }

      version {
        change_tier_to_cool_after_days_since_creation    = var.model_tier_cool_after_days
        change_tier_to_archive_after_days_since_creation = var.model_tier_archive_after_days
        delete_after_days_since_creation                 = 365
      }
    }
  }
}

# Blob read/write/delete logs of the model store (who fetched or published which version).
resource "azurerm_monitor_diagnostic_setting" "models_blob" {
  name                       = "diag-blob-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.models.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }

  enabled_metric {
    category = "Transaction"
  }
}
