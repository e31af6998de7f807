# One user-assigned identity per workload; each is federated with exactly one Kubernetes service account.
locals {
  workloads = {
    operator  = { namespace = var.operator_namespace, service_account = var.service_accounts.operator }
    inference = { namespace = var.kubernetes_namespace, service_account = var.service_accounts.inference }
    training  = { namespace = var.kubernetes_namespace, service_account = var.service_accounts.training }
  }
  models_container_scope = "${azurerm_storage_account.models.id}/blobServices/default/containers/${azurerm_storage_container.models.name}"
}

resource "azurerm_user_assigned_identity" "operator" {
  name                = "id-${local.base}-operator"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "inference" {
  name                = "id-${local.base}-inference"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "training" {
  name                = "id-${local.base}-training"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

locals {
  identities = {
    operator  = azurerm_user_assigned_identity.operator
    inference = azurerm_user_assigned_identity.inference
    training  = azurerm_user_assigned_identity.training
  }
}

resource "azurerm_federated_identity_credential" "workload" {
  for_each                  = local.workloads
  name                      = "fic-${each.key}"
  user_assigned_identity_id = local.identities[each.key].id
  audience                  = ["api://AzureADTokenExchange"]
  issuer                    = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject                   = "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
}

# Least privilege on the model store: the scoring side only reads it. Training publishes: its write access
# comes with the workspace storage role in aml.tf (the models container is on the same account).
resource "azurerm_role_assignment" "inference_models_reader" {
  scope                = local.models_container_scope
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.inference.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "operator_models_reader" {
  scope                = local.models_container_scope
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.operator.principal_id
  principal_type       = "ServicePrincipal"
}

# Blob index tags need their own data actions (no Storage Blob Data role but Owner has them): the publisher
# tags what it writes (servable), `forecast retire` (the pipeline) retags versions retired; the lifecycle policy
# reads them. The operator only reads the store: it holds no tag role.
resource "azurerm_role_definition" "model_lifecycle_tagger" {
  name        = "retail-forecast model lifecycle tagger (${local.compact})"
  scope       = azurerm_resource_group.main.id
  description = "Read and write blob index tags (retail_forecast_lifecycle) on the model store."

  permissions {
    data_actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write",
    ]
  }

  assignable_scopes = [azurerm_resource_group.main.id]
}

resource "azurerm_role_assignment" "model_lifecycle_tagger" {
  for_each = {
    training = azurerm_user_assigned_identity.training.principal_id
  }
  scope              = local.models_container_scope
  role_definition_id = azurerm_role_definition.model_lifecycle_tagger.role_definition_resource_id
  principal_id       = each.value
  principal_type     = "ServicePrincipal"
}
