// Private DNS zones for every private endpoint, linked to the VNet so APIM and the function app resolve the
// private addresses of the services (and the function app) instead of their public ones.

@description('The VNet the zones are linked to.')
param vnetId string

@description('Tags for every resource.')
param tags object

var storageSuffix = environment().suffixes.storage
var zoneNames = [
  'privatelink.documents.azure.com'
  'privatelink.servicebus.windows.net'
  'privatelink.blob.${storageSuffix}'
  'privatelink.queue.${storageSuffix}'
  'privatelink.table.${storageSuffix}'
  'privatelink.openai.azure.com'
  'privatelink.cognitiveservices.azure.com'
  'privatelink.azurewebsites.net'
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: 'link-gateway-vnet'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}]

output cosmosZoneId string = zones[0].id
output eventHubsZoneId string = zones[1].id
output blobZoneId string = zones[2].id
output queueZoneId string = zones[3].id
output tableZoneId string = zones[4].id
output openAiZoneId string = zones[5].id
output cognitiveServicesZoneId string = zones[6].id
output sitesZoneId string = zones[7].id
