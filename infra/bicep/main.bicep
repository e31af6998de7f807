// retail-forecast: the same resources as infra/terraform, for `az deployment group create`.
// Deploy into an existing resource group (see infra/README.md); its tags are set by `rgTags` below.
targetScope = 'resourceGroup'

@allowed(['dev', 'prod'])
param environment string
param location string = resourceGroup().location
@minLength(3)
@maxLength(10)
param namePrefix string = 'rfcst'
param extraTags object = {}
// 6 lowercase letters/digits that make the storage, ACR and Key Vault names globally unique ('': derived
// from the subscription and group; Terraform's default hashes differently, pass the same value to both).
param nameSuffix string = ''
param kubernetesVersion string = ''
@allowed(['Free', 'Standard'])
param aksSkuTier string = 'Standard'
param systemNodeVmSize string = 'Standard_D4ds_v5'
param systemNodeMinCount int = 1
param systemNodeMaxCount int = 3
param userNodeVmSize string = 'Standard_D4ds_v5'
param userNodeMinCount int = 0
param userNodeMaxCount int = 5
// No default: the API server is public and sees only public source addresses (a private range would lock
// everyone out). Pass the deploying agents' and the admins' egress CIDRs on the command line.
@minLength(1)
param apiServerAuthorizedIpRanges array
param allowedIpRanges array = []
// Retired model versions reach Archive on LRS, GRS and RA-GRS only (see the lifecycle policy).
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_RAGRS', 'Standard_GZRS', 'Standard_RAGZRS'])
param storageSku string = 'Standard_GRS'
param blobSoftDeleteDays int = 30
param modelTierCoolAfterDays int = 30
@description('Later than modelTierCoolAfterDays.')
param modelTierArchiveAfterDays int = 90
param modelsContainerName string = 'models'
param logRetentionDays int = 30
param amlComputeVmSize string = 'Standard_D4ds_v5'
param amlComputeMaxNodes int = 2
param kubernetesNamespace string = 'forecast'
param operatorNamespace string = 'forecast-system'
param operatorServiceAccount string = 'forecast-operator'
param inferenceServiceAccount string = 'forecast-inference'
param trainingServiceAccount string = 'forecast-training'
param alertEmailReceivers array = []
param alert5xxRatioThreshold string = '0.05'
param alertP95LatencyMsThreshold int = 250
@description('Alert when a version\'s live WAPE exceeds its backtest WAPE by more than this (0.25 = 25 %).')
param alertLiveWapeMargin string = '0.25'
// A secret in effect (the Incoming WebHook endpoint takes unauthenticated POSTs): passed at deploy time from
// the Key Vault-linked variable group, never written in a parameters file.
@secure()
@description('Azure DevOps Incoming WebHook URL the live-WAPE alert posts to, starting the pipeline\'s retraining path (infra/README.md). Empty: the alert only notifies.')
param retrainWebhookUrl string = ''
@description('Alert when a served feature\'s PSI against its training distribution stays above this (0.25: significant).')
param alertFeatureDriftPsi string = '0.25'
// 'Disabled' (default): Storage, Key Vault, ACR and the AML workspace get private endpoints and no public access.
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'
param vnetAddressPrefix string = '10.42.0.0/16'
param aksSubnetPrefix string = '10.42.0.0/20'
param endpointsSubnetPrefix string = '10.42.255.0/24'

var base = '${namePrefix}-${environment}'
var compact = '${namePrefix}${environment}${empty(nameSuffix) ? substring(uniqueString(subscription().id, resourceGroup().id), 0, 6) : nameSuffix}'
var tags = union({ application: 'retail-forecast', environment: environment, managed_by: 'bicep' }, extraTags)
var enablePrivateEndpoints = publicNetworkAccess == 'Disabled'
var roles = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource rgTags 'Microsoft.Resources/tags@2024-03-01' = {
  name: 'default'
  properties: {
    tags: tags
  }
}

// ---------------------------------------------------------------- monitoring workspace
resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${base}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${base}'
  location: location
  tags: tags
  kind: 'other'
  properties: {
    Application_Type: 'other'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// What the queries and the portal's Container Insights views read; ContainerLogV2 only (not the v1
// ContainerLog table as well, which would ingest every log line twice).
var containerInsightsStreams = [
  'Microsoft-ContainerLogV2'
  'Microsoft-KubeEvents'
  'Microsoft-KubePodInventory'
  'Microsoft-KubeNodeInventory'
  'Microsoft-KubeServices'
  'Microsoft-KubeMonAgentEvents'
  'Microsoft-InsightsMetrics'
  'Microsoft-ContainerInventory'
  'Microsoft-ContainerNodeInventory'
  'Microsoft-Perf'
]

// Container Insights with managed identity auth collects only through a data collection rule associated
// with the cluster (the portal and `az aks enable-addons` create these two; a template must).
// Logs are limited to the operator's and the scoring pods' namespaces to bound ingestion cost.
resource containerInsightsRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: 'dcr-${base}-container-insights'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    description: 'Container Insights for aks-${base}.'
    dataSources: {
      extensions: [
        {
          name: 'ContainerInsightsExtension'
          extensionName: 'ContainerInsights'
          streams: containerInsightsStreams
          extensionSettings: {
            dataCollectionSettings: {
              interval: '1m'
              namespaceFilteringMode: 'Include'
              namespaces: [kubernetesNamespace, operatorNamespace]
              enableContainerLogV2: true
            }
          }
        }
      ]
    }
    destinations: {
      logAnalytics: [{ name: 'ciworkspace', workspaceResourceId: logs.id }]
    }
    dataFlows: [{ streams: containerInsightsStreams, destinations: ['ciworkspace'] }]
  }
}

// ---------------------------------------------------------------- network
resource nsgAks 'Microsoft.Network/networkSecurityGroups@2024-01-01' = {
  name: 'nsg-${base}-aks'
  location: location
  tags: tags
}

resource nsgEndpoints 'Microsoft.Network/networkSecurityGroups@2024-01-01' = {
  name: 'nsg-${base}-endpoints'
  location: location
  tags: tags
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-01-01' = {
  name: 'vnet-${base}'
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [vnetAddressPrefix] }
    subnets: [
      {
        name: 'snet-aks'
        properties: {
          addressPrefix: aksSubnetPrefix
          networkSecurityGroup: { id: nsgAks.id }
          serviceEndpoints: [
            { service: 'Microsoft.Storage' }
            { service: 'Microsoft.KeyVault' }
            { service: 'Microsoft.ContainerRegistry' }
          ]
        }
      }
      {
        name: 'snet-endpoints'
        properties: {
          addressPrefix: endpointsSubnetPrefix
          networkSecurityGroup: { id: nsgEndpoints.id }
        }
      }
    ]
  }
}

var aksSubnetId = '${vnet.id}/subnets/snet-aks'
var endpointsSubnetId = '${vnet.id}/subnets/snet-endpoints'

// ---------------------------------------------------------------- AKS
// Host encryption (both pools) needs the subscription feature Microsoft.Compute/EncryptionAtHost registered
// once before the first deployment (infra/README.md, "Deploy from zero").
resource aks 'Microsoft.ContainerService/managedClusters@2024-09-01' = {
  name: 'aks-${base}'
  location: location
  tags: tags
  sku: { name: 'Base', tier: aksSkuTier }
  identity: { type: 'SystemAssigned' }
  properties: {
    dnsPrefix: base
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
      tenantID: tenant().tenantId
    }
    oidcIssuerProfile: { enabled: true }
    securityProfile: {
      workloadIdentity: { enabled: true }
      imageCleaner: { enabled: true, intervalHours: 48 }
    }
    apiServerAccessProfile: {
      authorizedIPRanges: apiServerAuthorizedIpRanges
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        vmSize: systemNodeVmSize
        enableAutoScaling: true
        minCount: systemNodeMinCount
        maxCount: systemNodeMaxCount
        count: systemNodeMinCount
        osDiskType: 'Ephemeral'
        osDiskSizeGB: 64
        maxPods: 50
        enableEncryptionAtHost: true
        vnetSubnetID: aksSubnetId
        availabilityZones: ['1', '2', '3']
        nodeTaints: ['CriticalAddonsOnly=true:NoSchedule']
        upgradeSettings: { maxSurge: '10%' }
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkPolicy: 'cilium'
      networkDataplane: 'cilium'
      loadBalancerSku: 'standard'
    }
    autoScalerProfile: {
      'balance-similar-node-groups': 'true'
      expander: 'least-waste'
      'scale-down-unneeded-time': '10m'
      'scale-down-delay-after-add': '10m'
    }
    addonProfiles: {
      // Managed identity auth: the agent sends what the data collection rule below asks for.
      omsagent: {
        enabled: true
        config: {
          logAnalyticsWorkspaceResourceID: logs.id
          useAADAuth: 'true'
        }
      }
      azurepolicy: { enabled: true }
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: { enableSecretRotation: 'true' }
      }
    }
  }
}

resource containerInsightsAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2023-03-11' = {
  name: 'ContainerInsightsExtension'
  scope: aks
  properties: {
    dataCollectionRuleId: containerInsightsRule.id
    description: 'Container Insights data collection; deleting it stops all Container Insights data.'
  }
}

// Control-plane audit: who changed what through the API server (write operations only: kube-audit-admin
// leaves out get/list/watch, which are most of the volume) and Entra ID authorisation decisions (guard).
resource aksDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'diag-aks-to-log-analytics'
  scope: aks
  properties: {
    workspaceId: logs.id
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      { category: 'kube-audit-admin', enabled: true }
      { category: 'guard', enabled: true }
    ]
  }
}

resource userPool 'Microsoft.ContainerService/managedClusters/agentPools@2024-09-01' = {
  parent: aks
  name: 'user'
  properties: {
    mode: 'User'
    vmSize: userNodeVmSize
    enableAutoScaling: true
    minCount: userNodeMinCount
    maxCount: userNodeMaxCount
    count: userNodeMinCount
    osDiskType: 'Ephemeral'
    osDiskSizeGB: 64
    maxPods: 50
    enableEncryptionAtHost: true
    vnetSubnetID: aksSubnetId
    availabilityZones: ['1', '2', '3']
    nodeLabels: { 'retailforecast.io/pool': 'user' }
    upgradeSettings: { maxSurge: '33%' }
  }
}

// ---------------------------------------------------------------- ACR
// No content trust: Azure refuses it on new registries (ContentTrustUnsupported; Docker Content Trust is
// being retired). Images are signed with Notation instead (infra/README.md). Anonymous pull is off by default.
resource acr 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: 'acr${compact}'
  location: location
  tags: tags
  sku: { name: 'Premium' }
  properties: {
    adminUserEnabled: false
    dataEndpointEnabled: true
    publicNetworkAccess: publicNetworkAccess
    zoneRedundancy: 'Enabled'
    policies: {
      retentionPolicy: { status: 'enabled', days: 30 }
    }
  }
}

resource kubeletAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acr.id, 'kubelet', roles.acrPull)
  scope: acr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: aks.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
  }
}

// Azure ML jobs on the training cluster pull their environment image with the cluster's identity.
resource trainingAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acr.id, trainingIdentity.id, roles.acrPull)
  scope: acr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: trainingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- model store
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${compact}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: storageSku }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: publicNetworkAccess
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true }
        file: { enabled: true }
      }
    }
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices, Logging, Metrics'
      ipRules: [for ip in allowedIpRanges: { value: ip, action: 'Allow' }]
      virtualNetworkRules: [{ id: aksSubnetId, action: 'Allow' }]
    }
    sasPolicy: {
      sasExpirationPeriod: '00.01:00:00'
      expirationAction: 'Log'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    changeFeed: { enabled: true }
    deleteRetentionPolicy: { enabled: true, days: blobSoftDeleteDays }
    containerDeleteRetentionPolicy: { enabled: true, days: blobSoftDeleteDays }
  }
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: modelsContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Tiering never touches what a ForecastModel may serve or roll back to: an archived blob takes hours to
// rehydrate, so every new scoring pod (scale-up, node drain) would fail to fetch it. The publisher tags every
// blob retail_forecast_lifecycle=servable, `forecast retire` retags a version retired once no ForecastModel can
// serve or roll back to it (retail_forecast/core/store.py); only retired blobs and noncurrent blob versions
// (left by an overwrite or delete, never read by the store) are tiered.
// Archive exists on LRS, GRS and RA-GRS accounts only: on ZRS, GZRS and RA-GZRS tiering stops at Cool.
var archiveSupported = contains(['Standard_LRS', 'Standard_GRS', 'Standard_RAGRS'], storageSku)
// Published blobs are never modified (tags do not count), so "since modification" is "since publish". A blob
// rehydrated for a rollback is not archived again for a week after its tier changed.
var retiredToCool = { daysAfterModificationGreaterThan: modelTierCoolAfterDays }
var retiredToArchive = { daysAfterModificationGreaterThan: modelTierArchiveAfterDays, daysAfterLastTierChangeGreaterThan: 7 }
var noncurrentTiers = {
  tierToCool: { daysAfterCreationGreaterThan: modelTierCoolAfterDays }
  delete: { daysAfterCreationGreaterThan: 365 }
}
var noncurrentToArchive = { daysAfterCreationGreaterThan: modelTierArchiveAfterDays }

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'retired-model-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['${modelsContainerName}/']
              blobIndexMatch: [{ name: 'retail_forecast_lifecycle', op: '==', value: 'retired' }]
            }
            actions: {
              baseBlob: union({ tierToCool: retiredToCool }, archiveSupported ? { tierToArchive: retiredToArchive } : {})
            }
          }
        }
        {
          name: 'noncurrent-blob-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['${modelsContainerName}/']
            }
            actions: {
              version: union(noncurrentTiers, archiveSupported ? { tierToArchive: noncurrentToArchive } : {})
            }
          }
        }
      ]
    }
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'diag-blob-to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

// Audit log of every data-plane access (secret, key and certificate reads and writes) and policy change.
resource keyVaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'diag-kv-to-log-analytics'
  scope: keyVault
  properties: {
    workspaceId: logs.id
    logs: [{ categoryGroup: 'audit', enabled: true }]
  }
}

// ---------------------------------------------------------------- Key Vault
resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv${compact}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'premium' }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for ip in allowedIpRanges: { value: ip }]
      virtualNetworkRules: [{ id: aksSubnetId }]
    }
  }
}

// ---------------------------------------------------------------- identities
var workloads = [
  { key: 'operator', namespace: operatorNamespace, serviceAccount: operatorServiceAccount }
  { key: 'inference', namespace: kubernetesNamespace, serviceAccount: inferenceServiceAccount }
  { key: 'training', namespace: kubernetesNamespace, serviceAccount: trainingServiceAccount }
]

resource operatorIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${base}-operator'
  location: location
  tags: tags
}

resource inferenceIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${base}-inference'
  location: location
  tags: tags
}

resource trainingIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${base}-training'
  location: location
  tags: tags
}

resource operatorFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: operatorIdentity
  name: 'fic-operator'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${workloads[0].namespace}:${workloads[0].serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}

// Federated credentials on different identities may be created in parallel; one per identity here.
resource inferenceFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: inferenceIdentity
  name: 'fic-inference'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${workloads[1].namespace}:${workloads[1].serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}

resource trainingFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: trainingIdentity
  name: 'fic-training'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${workloads[2].namespace}:${workloads[2].serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}

// Least privilege on the model store: the scoring side only reads it. Training publishes: its write access
// comes with the workspace storage role below (the models container is on the same account).
resource inferenceModelsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, inferenceIdentity.id, roles.storageBlobDataReader)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: inferenceIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorModelsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, operatorIdentity.id, roles.storageBlobDataReader)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: operatorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob index tags need their own data actions (no Storage Blob Data role but Owner has them): the publisher
// tags what it writes (servable), `forecast retire` (the pipeline) retags versions retired; the lifecycle policy
// reads them. The operator only reads the store: it holds no tag role.
resource modelLifecycleTagger 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'model-lifecycle-tagger')
  properties: {
    roleName: 'retail-forecast model lifecycle tagger (${compact})'
    description: 'Read and write blob index tags (retail_forecast_lifecycle) on the model store.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [resourceGroup().id]
  }
}

resource trainingModelsTagger 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, trainingIdentity.id, 'model-lifecycle-tagger')
  scope: modelsContainer
  properties: {
    roleDefinitionId: modelLifecycleTagger.id
    principalId: trainingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- Azure ML
// systemDatastoresAuthMode: first in a stable API version in 2025-06-01.
resource amlWorkspace 'Microsoft.MachineLearningServices/workspaces@2025-06-01' = {
  name: 'mlw-${base}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    friendlyName: 'retail-forecast ${environment}'
    applicationInsights: appInsights.id
    keyVault: keyVault.id
    storageAccount: storage.id
    containerRegistry: acr.id
    publicNetworkAccess: publicNetworkAccess
    hbiWorkspace: environment == 'prod'
    v1LegacyMode: false
    // The storage account allows no shared keys: the workspace's own datastores authenticate with identities.
    systemDatastoresAuthMode: 'Identity'
    // Managed VNet: computes reach the workspace's storage, Key Vault and ACR through managed private
    // endpoints that Azure ML creates itself for its associated resources (no user-defined outbound rules).
    managedNetwork: {
      isolationMode: 'AllowInternetOutbound'
    }
  }
}

// Identity-mode datastores: jobs read inputs and write outputs on the workspace's blob datastores
// (azureml-blobstore-<workspace id>, created by the workspace) with the cluster's identity. The containers
// are named by Azure ML, so the role is on the account; it includes the models container, which training
// publishes to anyway. The scoring identities keep container-scoped read access.
resource trainingWorkspaceStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, trainingIdentity.id, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: trainingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights accepts only Entra ID-authenticated telemetry (local auth off): the workspace and
// the training jobs publish with their identities.
resource workspaceAppInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, amlWorkspace.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: amlWorkspace.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource trainingAppInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, trainingIdentity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: trainingIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Training runs here; it scales to zero nodes when no job is queued.
resource amlCompute 'Microsoft.MachineLearningServices/workspaces/computes@2025-06-01' = {
  parent: amlWorkspace
  name: 'cpu-training'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${trainingIdentity.id}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    disableLocalAuth: true
    properties: {
      vmSize: amlComputeVmSize
      vmPriority: environment == 'prod' ? 'Dedicated' : 'LowPriority'
      enableNodePublicIp: false
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: amlComputeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT5M'
      }
    }
  }
}

// ---------------------------------------------------------------- private endpoints (optional)
// Each endpoint with its private DNS zones (indexes into privateDnsZoneNames) linked to the VNet. The AML
// workspace needs two zones: its API (api.azureml.ms) and its notebooks (notebooks.azure.net).
var privateDnsZoneNames = [
  'privatelink.blob.${az.environment().suffixes.storage}'
  'privatelink.vaultcore.azure.net'
  'privatelink.azurecr.io'
  'privatelink.api.azureml.ms'
  'privatelink.notebooks.azure.net'
]
var endpointTargets = [
  { key: 'blob', id: storage.id, groupId: 'blob', zones: [0] }
  { key: 'vault', id: keyVault.id, groupId: 'vault', zones: [1] }
  { key: 'registry', id: acr.id, groupId: 'registry', zones: [2] }
  { key: 'amlworkspace', id: amlWorkspace.id, groupId: 'amlworkspace', zones: [3, 4] }
]

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for zone in (enablePrivateEndpoints ? privateDnsZoneNames : []): {
    name: zone
    location: 'global'
    tags: tags
  }
]

resource dnsLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (zone, i) in (enablePrivateEndpoints ? privateDnsZoneNames : []): {
    parent: dnsZones[i]
    name: 'link-${replace(zone, '.', '-')}'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: { id: vnet.id }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for target in (enablePrivateEndpoints ? endpointTargets : []): {
    name: 'pe-${base}-${target.key}'
    location: location
    tags: tags
    properties: {
      subnet: { id: endpointsSubnetId }
      privateLinkServiceConnections: [
        {
          name: 'psc-${target.key}'
          properties: {
            privateLinkServiceId: target.id
            groupIds: [target.groupId]
          }
        }
      ]
    }
  }
]

resource privateDnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (target, i) in (enablePrivateEndpoints ? endpointTargets : []): {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        for zone in target.zones: {
          name: replace(privateDnsZoneNames[zone], '.', '-')
          properties: { privateDnsZoneId: dnsZones[zone].id }
        }
      ]
    }
  }
]

// ---------------------------------------------------------------- alerts (queries shared with Terraform)
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${base}-oncall'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'rf-${environment}'
    enabled: true
    emailReceivers: [
      for (address, i) in alertEmailReceivers: {
        name: 'email-${i}'
        emailAddress: address
        useCommonAlertSchema: true
      }
    ]
  }
}

// The live-WAPE alert's second action: start the pipeline's retraining path through its Incoming WebHook
// (azure-pipelines.yml `resources: webhooks:`). Only that alert uses this group.
resource retrainActionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(retrainWebhookUrl)) {
  name: 'ag-${base}-retrain'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'rf-retrain'
    enabled: true
    webhookReceivers: [
      {
        name: 'azure-devops-retrain'
        serviceUri: retrainWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

resource podsNotReady 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${base}-pods-not-ready'
  location: 'global'
  tags: tags
  properties: {
    description: 'Scoring or operator pods not ready for 10 minutes.'
    severity: 2
    enabled: true
    scopes: [aks.id]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT10M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'podsNotReady'
          metricNamespace: 'Microsoft.ContainerService/managedClusters'
          metricName: 'kube_pod_status_ready'
          timeAggregation: 'Average'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            { name: 'namespace', operator: 'Include', values: [kubernetesNamespace, operatorNamespace] }
            { name: 'condition', operator: 'Include', values: ['false'] }
          ]
        }
      ]
    }
    actions: [{ actionGroupId: actionGroup.id }]
  }
}

var logAlerts = [
  {
    key: 'http-5xx-ratio'
    description: 'Share of 5xx responses of the scoring service above the threshold over 5 minutes.'
    severity: 1
    window: 'PT5M'
    query: loadTextContent('../monitor/kql/alerts/http_5xx_ratio.kql')
    column: 'error_ratio'
    threshold: json(alert5xxRatioThreshold)
    failing: 1
    periods: 1
    retrain: false
  }
  {
    key: 'p95-latency'
    description: 'p95 latency of the scoring service above the threshold over 15 minutes.'
    severity: 2
    window: 'PT15M'
    query: loadTextContent('../monitor/kql/alerts/p95_latency.kql')
    column: 'p95_ms'
    threshold: alertP95LatencyMsThreshold
    failing: 2
    periods: 3
    retrain: false
  }
  {
    key: 'rollbacks'
    description: 'A ForecastModel rolled back or a model failed verification.'
    severity: 2
    window: 'PT15M'
    query: loadTextContent('../monitor/kql/alerts/rollbacks.kql')
    column: 'events'
    threshold: 0
    failing: 1
    periods: 1
    retrain: false
  }
  {
    key: 'live-wape'
    description: 'A model version\'s live WAPE (forecast evaluate) exceeds its backtest WAPE by more than the margin.'
    severity: 2
    window: 'PT1H'
    query: loadTextContent('../monitor/kql/alerts/live_wape.kql')
    column: 'wape_excess'
    threshold: json(alertLiveWapeMargin)
    failing: 1
    periods: 1
    retrain: true
  }
  {
    key: 'feature-drift'
    description: 'A served feature\'s input drift (PSI against its training distribution) above the threshold for 30 minutes.'
    severity: 3
    window: 'PT30M'
    query: loadTextContent('../monitor/kql/alerts/feature_drift.kql')
    column: 'psi'
    threshold: json(alertFeatureDriftPsi)
    failing: 1
    periods: 1
    retrain: false // drift alone is a reason to look, not to retrain: the live WAPE decides
  }
]

resource scheduledQueryRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in logAlerts: {
    name: 'alert-${base}-${rule.key}'
    location: location
    tags: tags
    properties: {
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [logs.id]
      evaluationFrequency: 'PT5M'
      windowSize: rule.window
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Maximum'
            metricMeasureColumn: rule.column
            operator: 'GreaterThan'
            threshold: rule.threshold
            failingPeriods: {
              minFailingPeriodsToAlert: rule.failing
              numberOfEvaluationPeriods: rule.periods
            }
          }
        ]
      }
      actions: {
        actionGroups: concat([actionGroup.id], (rule.retrain && !empty(retrainWebhookUrl)) ? [retrainActionGroup.id] : [])
        // In the common alert schema's data.customProperties: the pipeline's webhook trigger filters on it.
        customProperties: rule.retrain ? { forecastAction: 'retrain' } : {}
      }
    }
  }
]

// ---------------------------------------------------------------- outputs (same names as Terraform's)
output resource_group_name string = resourceGroup().name
output AZURE_STORAGE_ACCOUNT_URL string = storage.properties.primaryEndpoints.blob
output storage_account_name string = storage.name
output models_container string = modelsContainer.name
output model_store_uri string = 'azureblob://${modelsContainer.name}'
output acr_login_server string = acr.properties.loginServer
output acr_name string = acr.name
output aks_name string = aks.name
output aks_oidc_issuer_url string = aks.properties.oidcIssuerProfile.issuerURL
output operator_client_id string = operatorIdentity.properties.clientId
output inference_client_id string = inferenceIdentity.properties.clientId
output training_client_id string = trainingIdentity.properties.clientId
output tenant_id string = tenant().tenantId
output key_vault_uri string = keyVault.properties.vaultUri
output aml_workspace_name string = amlWorkspace.name
output aml_compute_name string = amlCompute.name
output log_analytics_workspace_id string = logs.properties.customerId
output kubernetes_namespace string = kubernetesNamespace
output operator_namespace string = operatorNamespace
output service_accounts object = {
  operator: operatorServiceAccount
  inference: inferenceServiceAccount
  training: trainingServiceAccount
}
