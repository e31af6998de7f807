locals {
  kql_dir = "${path.module}/../monitor/kql/alerts"
  # What the queries and the portal's Container Insights views read; ContainerLogV2 only (not the v1
  # ContainerLog table as well, which would ingest every log line twice).
  container_insights_streams = [
    "Microsoft-ContainerLogV2",
    "Microsoft-KubeEvents",
    "Microsoft-KubePodInventory",
    "Microsoft-KubeNodeInventory",
    "Microsoft-KubeServices",
    "Microsoft-KubeMonAgentEvents",
    "Microsoft-InsightsMetrics",
    "Microsoft-ContainerInventory",
    "Microsoft-ContainerNodeInventory",
    "Microsoft-Perf",
  ]
}

# Container Insights with managed identity auth collects only through a data collection rule associated
# with the cluster (the portal and `az aks enable-addons` create these two; a template must).
# Logs are limited to the operator's and the scoring pods' namespaces to bound ingestion cost.
resource "azurerm_monitor_data_collection_rule" "container_insights" {
  name                = "dcr-${local.base}-container-insights"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  kind                = "Linux"
  description         = "Container Insights for aks-${local.base}."
  tags                = local.tags

  destinations {
    log_analytics {
      name                  = "ciworkspace"
      workspace_resource_id = azurerm_log_analytics_workspace.main.id
    }
  }

  data_flow {
    streams      = local.container_insights_streams
    destinations = ["ciworkspace"]
  }

  data_sources {
    extension {
      name           = "ContainerInsightsExtension"
      extension_name = "ContainerInsights"
      streams        = local.container_insights_streams
      extension_json = jsonencode({
        dataCollectionSettings = {
          interval               = "1m"
          namespaceFilteringMode = "Include"
          namespaces             = [var.kubernetes_namespace, var.operator_namespace]
          enableContainerLogV2   = true
        }
      })
    }
  }
}

resource "azurerm_monitor_data_collection_rule_association" "container_insights" {
  name                    = "ContainerInsightsExtension"
  target_resource_id      = azurerm_kubernetes_cluster.main.id
  data_collection_rule_id = azurerm_monitor_data_collection_rule.container_insights.id
  description             = "Container Insights data collection; deleting it stops all Container Insights data."
}

# Control-plane audit: who changed what through the API server (write operations only: kube-audit-admin
# leaves out get/list/watch, which are most of the volume) and Entra ID authorisation decisions (guard).
resource "azurerm_monitor_diagnostic_setting" "aks" {
  name                           = "diag-aks-to-log-analytics"
  target_resource_id             = azurerm_kubernetes_cluster.main.id
  log_analytics_workspace_id     = azurerm_log_analytics_workspace.main.id
  log_analytics_destination_type = "Dedicated"

  enabled_log {
    category = "kube-audit-admin"
  }

  enabled_log {
    category = "guard"
  }
}

resource "azurerm_monitor_action_group" "oncall" {
  name                = "ag-${local.base}-oncall"
  resource_group_name = azurerm_resource_group.main.name
  short_name          = "rf-${var.environment}"
  tags                = local.tags

  dynamic "email_receiver" {
    for_each = var.alert_email_receivers
    content {
      name                    = "email-${email_receiver.key}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

# The live-WAPE alert's second action: start the pipeline's retraining path through its Incoming WebHook
# (azure-pipelines.yml `resources: webhooks:`). Only that alert uses this group: a 5xx or latency alert
# is no reason to retrain.
resource "azurerm_monitor_action_group" "retrain" {
  count               = nonsensitive(var.retrain_webhook_url != "") ? 1 : 0
  name                = "ag-${local.base}-retrain"
  resource_group_name = azurerm_resource_group.main.name
  short_name          = "rf-retrain"
  tags                = local.tags

  webhook_receiver {
    name                    = "azure-devops-retrain"
    service_uri             = var.retrain_webhook_url
    use_common_alert_schema = true
  }
}

# Pods not ready in the ForecastModel namespace (AKS platform metric, no agent configuration needed).
resource "azurerm_monitor_metric_alert" "pods_not_ready" {
  name                = "alert-${local.base}-pods-not-ready"
  resource_group_name = azurerm_resource_group.main.name
  scopes              = [azurerm_kubernetes_cluster.main.id]
  description         = "Scoring or operator pods not ready for 10 minutes."
  severity            = 2
  frequency           = "PT1M"
  window_size         = "PT10M"
  tags                = local.tags

  criteria {
    metric_namespace = "Microsoft.ContainerService/managedClusters"
    metric_name      = "kube_pod_status_ready"
    aggregation      = "Average"
    operator         = "GreaterThan"
    threshold        = 0

    dimension {
      name     = "namespace"
      operator = "Include"
      values   = [var.kubernetes_namespace, var.operator_namespace]
    }

    dimension {
      name     = "condition"
      operator = "Include"
      values   = ["false"]
    }
  }

  action {
    action_group_id = azurerm_monitor_action_group.oncall.id
  }
}

# The queries live in infra/monitor/kql/alerts (shared with Bicep, checked against the code by tests);
# each alert is named after its query file.
locals {
  log_alerts = {
    http_5xx_ratio = {
      description = "Share of 5xx responses of the scoring service above the threshold over 5 minutes."
      severity    = 1
      window      = "PT5M"
      column      = "error_ratio"
      threshold   = var.alert_5xx_ratio_threshold
      failing     = 1
      periods     = 1
      retrain     = false
    }
    p95_latency = {
      description = "p95 latency of the scoring service above the threshold over 15 minutes."
      severity    = 2
      window      = "PT15M"
      column      = "p95_ms"
      threshold   = var.alert_p95_latency_ms_threshold
      failing     = 2
      periods     = 3
      retrain     = false
    }
    rollbacks = {
      description = "A ForecastModel rolled back or a model failed verification."
      severity    = 2
      window      = "PT15M"
      column      = "events"
      threshold   = 0
      failing     = 1
      periods     = 1
      retrain     = false
    }
    live_wape = {
      description = "A model version's live WAPE (forecast evaluate) exceeds its backtest WAPE by more than the margin."
      severity    = 2
      window      = "PT1H"
      column      = "wape_excess"
      threshold   = var.alert_live_wape_margin
      failing     = 1
      periods     = 1
      retrain     = true
    }
    feature_drift = {
      description = "A served feature's input drift (PSI against its training distribution) above the threshold for 30 minutes."
      severity    = 3
      window      = "PT30M"
      column      = "psi"
      threshold   = var.alert_feature_drift_psi
      failing     = 1
      periods     = 1
      retrain     = false # drift alone is a reason to look, not to retrain: the live WAPE decides
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "log" {
  for_each             = local.log_alerts
  name                 = "alert-${local.base}-${replace(each.key, "_", "-")}"
  location             = azurerm_resource_group.main.location
  resource_group_name  = azurerm_resource_group.main.name
  scopes               = [azurerm_log_analytics_workspace.main.id]
  description          = each.value.description
  severity             = each.value.severity
  evaluation_frequency = "PT5M"
  window_duration      = each.value.window
  tags                 = local.tags

  criteria {
    query                   = file("${local.kql_dir}/${each.key}.kql")
    time_aggregation_method = "Maximum"
    metric_measure_column   = each.value.column
    operator                = "GreaterThan"
    threshold               = each.value.threshold

    failing_periods {
      minimum_failing_periods_to_trigger_alert = each.value.failing
      number_of_evaluation_periods             = each.value.periods
    }
  }

  action {
    action_groups = concat(
      [azurerm_monitor_action_group.oncall.id],
      each.value.retrain ? azurerm_monitor_action_group.retrain[*].id : [],
    )
    # In the common alert schema's data.customProperties: the pipeline's webhook trigger filters on it.
    custom_properties = each.value.retrain ? { forecastAction = "retrain" } : {}
  }
}
