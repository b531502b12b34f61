// Event Hubs: the proxy publishes each request id, the parser's Event Hub trigger consumes it.
// Local (SAS) auth is off; the function app uses Entra roles (see roles.bicep).

@description('Azure region.')
param location string

@description('Namespace name.')
param name string

@description('Standard allows 1 MB events and up to 20 consumer groups.')
@allowed([
  'Standard'
  'Premium'
])
param sku string

@description('Event hub name (EVENT_HUB_NAME).')
param hubName string

@description('Consumer group the parser reads with (EVENT_HUB_CONSUMER_GROUP).')
param consumerGroupName string

@description('Partitions: the upper bound of parser instances reading in parallel.')
param partitionCount int

@description('Subnet for private endpoints.')
param privateEndpointSubnetId string

@description('Private DNS zone privatelink.servicebus.windows.net.')
param privateDnsZoneId string

@description('Tags for every resource.')
param tags object

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    tier: sku
    capacity: 1
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Disabled'
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: 1
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = if (consumerGroupName != '$Default') {
  parent: hub
  name: consumerGroupName
}

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}'
  params: {
    location: location
    name: 'pe-${name}'
    serviceId: namespace.id
    groupId: 'namespace'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: privateDnsZoneId
    tags: tags
  }
}

output namespaceName string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output hubName string = hub.name
