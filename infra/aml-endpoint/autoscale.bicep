// Autoscale of the live colour of the managed online endpoint. Managed deployments have no autoscaler of
// their own: Azure Monitor autoscale scales their instance count. The pipeline's endpoint stage deploys
// this for the deployment it just switched traffic to:
//   az deployment group create -g <group> -f infra/aml-endpoint/autoscale.bicep \
//     -p deploymentId=<online deployment id> minInstances=<its instance_count>
targetScope = 'resourceGroup'

@description('Resource id of the online deployment: .../workspaces/<w>/onlineEndpoints/<e>/deployments/<d>.')
param deploymentId string
param location string = resourceGroup().location
@minValue(1)
param minInstances int = 2
param maxInstances int = 10
// The same target as the AKS HPA the pipeline asks the operator for (targetCPUUtilizationPercentage 70).
param scaleOutAboveCpuPercent int = 70
param scaleInBelowCpuPercent int = 30

var segments = split(deploymentId, '/')
var endpointName = segments[10]
var deploymentName = segments[12]

resource autoscale 'Microsoft.Insights/autoscalesettings@2022-10-01' = {
  name: 'autoscale-${endpointName}-${deploymentName}'
  location: location
  properties: {
    enabled: true
    targetResourceUri: deploymentId
    profiles: [
      {
        name: 'cpu'
        capacity: {
          minimum: string(minInstances)
          maximum: string(maxInstances)
          default: string(minInstances)
        }
        rules: [
          {
            metricTrigger: {
              metricName: 'CpuUtilizationPercentage'
              metricNamespace: 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments'
              metricResourceUri: deploymentId
              operator: 'GreaterThan'
              statistic: 'Average'
              threshold: scaleOutAboveCpuPercent
              timeAggregation: 'Average'
              timeGrain: 'PT1M'
              timeWindow: 'PT5M'
            }
            scaleAction: {
              direction: 'Increase'
              type: 'ChangeCount'
              value: '2'
              cooldown: 'PT5M'
            }
          }
          {
            metricTrigger: {
              metricName: 'CpuUtilizationPercentage'
              metricNamespace: 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments'
              metricResourceUri: deploymentId
              operator: 'LessThan'
              statistic: 'Average'
              threshold: scaleInBelowCpuPercent
              timeAggregation: 'Average'
              timeGrain: 'PT1M'
              timeWindow: 'PT10M'
            }
            scaleAction: {
              direction: 'Decrease'
              type: 'ChangeCount'
              value: '1'
              cooldown: 'PT10M'
            }
          }
        ]
      }
    ]
  }
}

output autoscaleName string = autoscale.name
