// The gateway's Function App on Flex Consumption: Python 3.11, VNet-integrated, system-assigned identity,
// identity-based connections only. Inbound traffic arrives through its private endpoint (from APIM in the
// VNet); the public endpoint denies everything except, optionally, deployments to the SCM site.
//
// The app settings below are exactly the ones the code reads (shared/settings.py,
// local.settings.sample.json); tests/test_bicep_settings.py keeps them in step.

@description('Azure region.')
param location string

@description('Prefix for resource names.')
param namePrefix string

@description('Function app name.')
param name string

@description('Storage account (identity-based AzureWebJobsStorage and the deployment package).')
param storageAccountName string

@description('Blob endpoint of that storage account.')
param storageBlobEndpoint string

@description('Blob container for the deployment package.')
param deploymentContainerName string

@description('Subnet delegated to Microsoft.App/environments.')
param integrationSubnetId string

@description('Subnet for private endpoints.')
param privateEndpointSubnetId string

@description('Private DNS zone privatelink.azurewebsites.net.')
param sitesZoneId string

@description('Application Insights connection string (OpenTelemetry exporter of the Python worker).')
@secure()
param appInsightsConnectionString string

@description('GATEWAY_BACKENDS: JSON list of AOAI backends (see proxy/backends.py).')
param gatewayBackendsJson string

@description('Cosmos DB endpoint and names.')
param cosmosEndpoint string
param cosmosDatabaseName string
param cosmosExchangesContainerName string
param cosmosRecordsContainerName string
param cosmosDeadlettersContainerName string

@description('TTL of stored raw exchanges in seconds.')
param exchangeTtlSeconds int

@description('Event Hubs: fully qualified namespace, hub and consumer group.')
param eventHubsNamespace string
param eventHubName string
param eventHubConsumerGroup string

@description('Ask AOAI for usage on streams the client did not ask for, and hide that chunk from the client.')
param injectStreamUsage bool

@description('Largest request body the proxy accepts, in bytes.')
param maxRequestBodyBytes int

@description('Maximum instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory per instance in MB (2048 or 4096).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int

@description('Client IP ranges (CIDR) allowed to reach the SCM (deployment) endpoint, e.g. your build agent. Empty: deploy from inside the VNet.')
param deploymentAllowedIpRanges array

@description('Tags for the function app (azd finds the app by azd-service-name).')
param tags object

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: 'plan-${namePrefix}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

var scmRules = [for (range, i) in deploymentAllowedIpRanges: {
  name: 'deploy-${i}'
  action: 'Allow'
  ipAddress: range
  priority: 100 + i
}]

resource site 'Microsoft.Web/sites@2023-12-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'gateway'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: integrationSubnetId
    publicNetworkAccess: empty(deploymentAllowedIpRanges) ? 'Disabled' : 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      ipSecurityRestrictionsDefaultAction: 'Deny'
      ipSecurityRestrictions: []
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Deny'
      scmIpSecurityRestrictions: scmRules
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// FUNCTIONS_WORKER_RUNTIME and the runtime version are not app settings on Flex Consumption: they are
// functionAppConfig.runtime above. AzureWebJobsStorage is the identity form (__accountName).
resource appSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storageAccountName
    PYTHON_ENABLE_INIT_INDEXING: '1'
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    GATEWAY_BACKENDS: gatewayBackendsJson
    LOG_STORE: 'cosmos'
    COSMOS_ENDPOINT: cosmosEndpoint
    COSMOS_DATABASE: cosmosDatabaseName
    COSMOS_EXCHANGES_CONTAINER: cosmosExchangesContainerName
    COSMOS_RECORDS_CONTAINER: cosmosRecordsContainerName
    COSMOS_DEADLETTERS_CONTAINER: cosmosDeadlettersContainerName
    EXCHANGE_TTL_SECONDS: string(exchangeTtlSeconds)
    EVENT_CHANNEL: 'eventhub'
    EventHubConnection__fullyQualifiedNamespace: eventHubsNamespace
    EVENT_HUB_NAME: eventHubName
    EVENT_HUB_CONSUMER_GROUP: eventHubConsumerGroup
    INJECT_STREAM_USAGE: injectStreamUsage ? 'true' : 'false'
    MAX_REQUEST_BODY_BYTES: string(maxRequestBodyBytes)
  }
}

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}'
  params: {
    location: location
    name: 'pe-${name}'
    serviceId: site.id
    groupId: 'sites'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: sitesZoneId
    tags: tags
  }
}

output name string = site.name
output id string = site.id
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
