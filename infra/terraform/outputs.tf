# What the Helm install, `forecast publish` and the pipeline need (terraform output -json).
output "resource_group_name" {
  value = azurerm_resource_group.main.name
}

output "AZURE_STORAGE_ACCOUNT_URL" {
  description = "Model store account URL (DefaultAzureCredential / workload identity)."
  value       = azurerm_storage_account.models.primary_blob_endpoint
}

output "storage_account_name" {
  value = azurerm_storage_account.models.name
}

output "models_container" {
  description = "Container of the model store: --store azureblob://<models_container>."
  value       = azurerm_storage_container.models.name
}

output "model_store_uri" {
  value = "azureblob://${azurerm_storage_container.models.name}"
}

output "acr_login_server" {
  value = azurerm_container_registry.main.login_server
}

output "acr_name" {
  value = azurerm_container_registry.main.name
}

output "aks_name" {
  value = azurerm_kubernetes_cluster.main.name
}

output "aks_oidc_issuer_url" {
  value = azurerm_kubernetes_cluster.main.oidc_issuer_url
}

output "operator_client_id" {
  description = "azure.workload.identity/client-id of the operator's service account."
  value       = azurerm_user_assigned_identity.operator.client_id
}

output "inference_client_id" {
  description = "azure.workload.identity/client-id of the scoring pods' service account."
  value       = azurerm_user_assigned_identity.inference.client_id
}

output "training_client_id" {
  value = azurerm_user_assigned_identity.training.client_id
}

output "tenant_id" {
  value = data.azurerm_client_config.current.tenant_id
}

output "key_vault_uri" {
  value = azurerm_key_vault.main.vault_uri
}

output "aml_workspace_name" {
  value = azurerm_machine_learning_workspace.main.name
}

output "aml_compute_name" {
  value = azurerm_machine_learning_compute_cluster.training.name
}

output "log_analytics_workspace_id" {
  value = azurerm_log_analytics_workspace.main.workspace_id
}

output "kubernetes_namespace" {
  value = var.kubernetes_namespace
}

output "operator_namespace" {
  value = var.operator_namespace
}

output "service_accounts" {
  value = var.service_accounts
}
