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

# Tiering never touches what a ForecastModel may serve or roll back to: an archived blob takes hours to
# rehydrate, so every new scoring pod (scale-up, node drain) would fail to fetch it. The publisher tags every
# blob retail_forecast_lifecycle=servable, `forecast retire` retags a version retired once no ForecastModel can
# serve or roll back to it (retail_forecast/core/store.py); only retired blobs and noncurrent blob versions
# (left by an overwrite or delete, never read by the store) are tiered.
locals {
  # Archive exists on LRS, GRS and RA-GRS accounts only: on ZRS, GZRS and RA-GZRS tiering stops at Cool.
  archive_supported = contains(["LRS", "GRS", "RAGRS"], var.storage_replication_type)
}

resource "azurerm_storage_management_policy" "models" {
  storage_account_id = azurerm_storage_account.models.id

  lifecycle {
    precondition {
      condition     = var.model_tier_archive_after_days > var.model_tier_cool_after_days
      error_message = "model_tier_archive_after_days must be later than model_tier_cool_after_days."
    }
  }

  rule {
    name    = "retired-model-versions"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${var.models_container_name}/"]

      match_blob_index_tag {
        name      = "retail_forecast_lifecycle"
        operation = "=="
        value     = "retired"
      }
    }

    # Published blobs are never modified (tags do not count), so "since modification" is "since publish".
    # A blob rehydrated for a rollback is not archived again for a week after its tier changed.
    actions {
      base_blob {
        tier_to_cool_after_days_since_modification_greater_than        = var.model_tier_cool_after_days
        tier_to_archive_after_days_since_modification_greater_than     = local.archive_supported ? var.model_tier_archive_after_days : null
        tier_to_archive_after_days_since_last_tier_change_greater_than = local.archive_supported ? 7 : null
      }
    }
  }

  rule {
    name    = "noncurrent-blob-versions"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${var.models_container_name}/"]
    }

    actions {
      version {
        change_tier_to_cool_after_days_since_creation    = var.model_tier_cool_after_days
        change_tier_to_archive_after_days_since_creation = local.archive_supported ? var.model_tier_archive_after_days : null
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
