terraform {
  required_version = ">= 1.6"

  required_providers {
    # The floor is the newest argument these files use: application_insights local_authentication_enabled
    # (4.78; before it: machine_learning_workspace storage_account_access_type 4.77, features.storage
    # data_plane_available 4.49, the compute cluster without public IP or subnet 4.18).
    # tests/infra/test_provider_reference.py derives it from infra/reference/azurerm.json and fails if
    # it differs; `~>` keeps 5.x (which removes the 4.x deprecations) out until the templates move.
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.78"
    }
  }

  # State lives in a storage account created once per subscription (see infra/README.md):
  #   terraform init -backend-config="resource_group_name=..." -backend-config="storage_account_name=..." \
  #     -backend-config="container_name=tfstate" -backend-config="key=retail-forecast-<env>.tfstate"
  backend "azurerm" {
    use_azuread_auth = true
  }
}

provider "azurerm" {
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
    # The storage firewall denies everything but the AKS subnet: a runner outside the VNet gets 403 from
    # the blob/queue data plane, which azurerm 4.x otherwise calls on create and read. Nothing here needs
    # it (containers, blob properties and the lifecycle policy are all Resource Manager calls).
    storage {
      data_plane_available = false
    }
  }
  storage_use_azuread = true
}
