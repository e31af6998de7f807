# Optional private endpoints (var.enable_private_endpoints): blob, Key Vault, ACR and the AML workspace in snet-endpoints,
# each with its private DNS zones linked to the VNet. With them on, the services' public access is off.
# The AML workspace needs two zones: its API (api.azureml.ms) and its notebooks (notebooks.azure.net).
locals {
  private_endpoints = var.enable_private_endpoints ? {
    blob = {
      resource_id = azurerm_storage_account.models.id
      subresource = "blob"
      dns_zones   = ["privatelink.blob.core.windows.net"]
    }
    vault = {
      resource_id = azurerm_key_vault.main.id
      subresource = "vault"
      dns_zones   = ["privatelink.vaultcore.azure.net"]
    }
    registry = {
      resource_id = azurerm_container_registry.main.id
      subresource = "registry"
      dns_zones   = ["privatelink.azurecr.io"]
    }
    amlworkspace = {
      resource_id = azurerm_machine_learning_workspace.main.id
      subresource = "amlworkspace"
      dns_zones   = ["privatelink.api.azureml.ms", "privatelink.notebooks.azure.net"]
    }
  } : {}
  private_dns_zones = toset(flatten([for endpoint in values(local.private_endpoints) : endpoint.dns_zones]))
}

resource "azurerm_private_dns_zone" "endpoints" {
  for_each            = local.private_dns_zones
  name                = each.value
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "endpoints" {
  for_each              = local.private_dns_zones
  name                  = "link-${replace(each.value, ".", "-")}"
  resource_group_name   = azurerm_resource_group.main.name
  private_dns_zone_name = azurerm_private_dns_zone.endpoints[each.value].name
  virtual_network_id    = azurerm_virtual_network.main.id
  tags                  = local.tags
}

resource "azurerm_private_endpoint" "endpoints" {
  for_each            = local.private_endpoints
  name                = "pe-${local.base}-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  tags                = local.tags

  private_service_connection {
    name                           = "psc-${each.key}"
    private_connection_resource_id = each.value.resource_id
    subresource_names              = [each.value.subresource]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "default"
    private_dns_zone_ids = [for zone in each.value.dns_zones : azurerm_private_dns_zone.endpoints[zone].id]
  }
}
