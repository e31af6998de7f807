variable "environment" {
  description = "Environment name (dev, prod): used in names and tags."
  type        = string
  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
}

variable "name_prefix" {
  description = "Short prefix for resource names (lowercase letters and digits, 3-10 chars)."
  type        = string
  default     = "rfcst"
  validation {
    condition     = can(regex("^[a-z0-9]{3,10}$", var.name_prefix))
    error_message = "name_prefix must be 3-10 lowercase letters or digits."
  }
}

variable "name_suffix" {
  description = "6 lowercase letters/digits that make the storage, ACR and Key Vault names globally unique (null: derived from the subscription id)."
  type        = string
  default     = null
  validation {
    condition     = var.name_suffix == null || can(regex("^[a-z0-9]{6}$", var.name_suffix))
    error_message = "name_suffix must be 6 lowercase letters or digits."
  }
}

variable "tags" {
  description = "Extra tags merged into every resource's tags."
  type        = map(string)
  default     = {}
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (null: the region's default)."
  type        = string
  default     = null
}

variable "aks_sku_tier" {
  description = "AKS control plane tier: Free (no uptime SLA) or Standard (SLA)."
  type        = string
  default     = "Standard"
}

variable "system_node_vm_size" {
  description = "VM size of the system node pool."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "system_node_min_count" {
  type    = number
  default = 1
}

variable "system_node_max_count" {
  type    = number
  default = 3
}

variable "user_node_vm_size" {
  description = "VM size of the user node pool that runs the operator and the scoring pods."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "user_node_min_count" {
  description = "Minimum nodes of the user pool (0 lets the autoscaler empty it)."
  type        = number
  default     = 0
}

variable "user_node_max_count" {
  type    = number
  default = 5
}

# No default: the API server is public, so it only ever sees public source addresses (a private range
# would lock everyone out). Pass the egress IPs of the deploying agents and of the admins, e.g.
#   -var 'api_server_authorized_ip_ranges=["203.0.113.7/32"]'
variable "api_server_authorized_ip_ranges" {
  description = "Public CIDRs allowed to reach the AKS API server: the deploying agents' and the admins' egress addresses."
  type        = list(string)
  validation {
    condition = length(var.api_server_authorized_ip_ranges) > 0 && alltrue([
      for cidr in var.api_server_authorized_ip_ranges :
      can(cidrhost(cidr, 0)) && !can(regex("^(0\\.0\\.0\\.0/0|10\\.|127\\.|192\\.168\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.)", cidr))
    ])
    error_message = "api_server_authorized_ip_ranges must list public CIDRs (not 0.0.0.0/0, not RFC 1918 or loopback)."
  }
}

variable "storage_allowed_ip_ranges" {
  description = "Public IPs/CIDRs (no private ranges) allowed through the storage and Key Vault firewalls."
  type        = list(string)
  default     = []
}

variable "storage_replication_type" {
  description = "Replication of the model storage account (GRS for prod, ZRS or GRS for dev). Retired versions reach Archive on LRS, GRS and RAGRS only."
  type        = string
  default     = "GRS"
  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be LRS, ZRS, GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "blob_soft_delete_days" {
  description = "Soft-delete retention of blobs, versions and containers, in days."
  type        = number
  default     = 30
}

variable "model_tier_cool_after_days" {
  description = "Retired model versions (and noncurrent blob versions) move to Cool this many days after publish."
  type        = number
  default     = 30
}

variable "model_tier_archive_after_days" {
  description = "Retired model versions (and noncurrent blob versions) move to Archive this many days after publish (LRS, GRS, RA-GRS only)."
  type        = number
  default     = 90
}

variable "models_container_name" {
  description = "Blob container holding the model store (azureblob://<container>)."
  type        = string
  default     = "models"
}

variable "log_retention_days" {
  type    = number
  default = 30
}

variable "aml_compute_vm_size" {
  type    = string
  default = "Standard_D4ds_v5"
}

variable "aml_compute_max_nodes" {
  type    = number
  default = 2
}

variable "kubernetes_namespace" {
  description = "Namespace of the ForecastModel workloads (scoring pods, training jobs)."
  type        = string
  default     = "forecast"
}

variable "operator_namespace" {
  description = "Namespace the operator chart installs into."
  type        = string
  default     = "forecast-system"
}

variable "service_accounts" {
  description = "Kubernetes service account names federated with the user-assigned identities."
  type = object({
    operator  = string
    inference = string
    training  = string
  })
  default = {
    operator  = "forecast-operator"
    inference = "forecast-inference"
    training  = "forecast-training"
  }
}

variable "alert_email_receivers" {
  description = "E-mail addresses of the action group."
  type        = list(string)
  default     = []
}

variable "alert_5xx_ratio_threshold" {
  description = "Alert when the share of 5xx responses over 5 minutes exceeds this (0.05 = 5 %)."
  type        = number
  default     = 0.05
}

variable "alert_live_wape_margin" {
  description = "Alert when a version's live WAPE exceeds its backtest WAPE by more than this (0.25 = 25 %)."
  type        = number
  default     = 0.25
}

# A secret in effect: the Incoming WebHook endpoint takes unauthenticated POSTs, so whoever has the URL can
# start the retraining path. It comes from the Key Vault-linked variable group (TF_VAR_retrain_webhook_url),
# never from a tfvars file.
variable "retrain_webhook_url" {
  description = "Azure DevOps Incoming WebHook URL the live-WAPE alert posts to, starting the pipeline's retraining path (infra/README.md). Empty: the alert only notifies."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.retrain_webhook_url == "" || can(regex("^https://dev\\.azure\\.com/[^/]+/_apis/public/distributedtask/webhooks/[A-Za-z0-9_-]+\\?api-version=", var.retrain_webhook_url))
    error_message = "retrain_webhook_url: https://dev.azure.com/<org>/_apis/public/distributedtask/webhooks/<connection>?api-version=6.0-preview, or empty."
  }
}

variable "alert_feature_drift_psi" {
  description = "Alert when a served feature's PSI against its training distribution stays above this (0.25: significant)."
  type        = number
  default     = 0.25
}

variable "alert_p95_latency_ms_threshold" {
  description = "Alert when the p95 request latency over 15 minutes exceeds this, in milliseconds."
  type        = number
  default     = 250
}

variable "enable_private_endpoints" {
  description = "Private endpoints for Storage (blob), Key Vault and ACR in a dedicated subnet, and public access off."
  type        = bool
  default     = true
}

variable "vnet_address_space" {
  type    = list(string)
  default = ["10.42.0.0/16"]
}
