terraform {
  required_version = ">= 1.6"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.14"
    }
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.1"
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
  }
  storage_use_azuread = true
}

provider "azapi" {}
