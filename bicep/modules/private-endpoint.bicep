// One private endpoint with its DNS zone group: the building block every service module uses.

@description('Azure region.')
param location string

@description('Name of the private endpoint.')
param name string

@description('Resource id of the service the endpoint connects to.')
param serviceId string

@description('Sub-resource of the service (for example Sql, namespace, blob, account, sites).')
param groupId string

@description('Subnet for private endpoints.')
param subnetId string

@description('Private DNS zone that gets the A record.')
param privateDnsZoneId string

@description('Tags for every resource.')
param tags object

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: serviceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'zone'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}
