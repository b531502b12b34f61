// The function app's storage: host keys and leases, Event Hubs checkpoints, and the Flex Consumption
// deployment package. Identity only (no shared keys), reachable only through private endpoints.

@description('Azure region.')
param location string

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Subnet for private endpoints.')
param privateEndpointSubnetId string

@description('Private DNS zone for blob endpoints.')
param blobZoneId string
@description('Private DNS zone for queue endpoints.')
param queueZoneId string
@description('Private DNS zone for table endpoints.')
param tableZoneId string

@description('Tags for every resource.')
param tags object

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_206: holds only Functions host state (keys, leases, checkpoints) and the deployment package, all recreated by a redeploy; zone-redundant storage is enough
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

module blobEndpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}-blob'
  params: {
    location: location
    name: 'pe-${name}-blob'
    serviceId: account.id
    groupId: 'blob'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: blobZoneId
    tags: tags
  }
}

module queueEndpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}-queue'
  params: {
    location: location
    name: 'pe-${name}-queue'
    serviceId: account.id
    groupId: 'queue'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: queueZoneId
    tags: tags
  }
}

module tableEndpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}-table'
  params: {
    location: location
    name: 'pe-${name}-table'
    serviceId: account.id
    groupId: 'table'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: tableZoneId
    tags: tags
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
