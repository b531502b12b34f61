// Cosmos DB for NoSQL: the raw exchanges (TTL-bound), the usage records, dead letters and Responses API
// affinity. Local (key) auth is off; the function app uses data-plane RBAC (see roles.bicep).
// Partition keys match shared/adapters/cosmos.py.

@description('Azure region.')
param location string

@description('Cosmos DB account name.')
param name string

@description('Serverless (pay per request, good for most gateways) or provisioned autoscale throughput.')
param serverless bool

@description('Autoscale maximum RU/s for the database when not serverless.')
param autoscaleMaxThroughput int

@description('Database name (COSMOS_DATABASE).')
param databaseName string

@description('Container of raw exchanges (COSMOS_EXCHANGES_CONTAINER).')
param exchangesContainerName string
@description('Container of usage records (COSMOS_RECORDS_CONTAINER).')
param recordsContainerName string
@description('Container of dead letters (COSMOS_DEADLETTERS_CONTAINER).')
param deadlettersContainerName string
@description('Container of Responses API affinity entries.')
param affinityContainerName string
@description('Container of exact response cache entries (COSMOS_CACHE_CONTAINER).')
param cacheContainerName string
@description('Container of budget ledgers, one item per budget and period (COSMOS_BUDGETS_CONTAINER).')
param budgetsContainerName string
@description('Container of stored-object owners (COSMOS_OWNERS_CONTAINER): which subscription created a response, file or batch.')
param ownersContainerName string

@description('Default TTL of usage records in seconds; -1 keeps them until deleted.')
param recordsTtlSeconds int

@description('Default TTL of dead letters in seconds.')
param deadlettersTtlSeconds int

@description('Subnet for private endpoints.')
param privateEndpointSubnetId string

@description('Private DNS zone privatelink.documents.azure.com.')
param privateDnsZoneId string

@description('Tags for every resource.')
param tags object

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  //checkov:skip=CKV_AZURE_99: publicNetworkAccess is Disabled; the account is reachable only through its private endpoint, so IP or VNet filters would add nothing
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: serverless ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    publicNetworkAccess: 'Disabled'
    isVirtualNetworkFilterEnabled: false
    minimalTlsVersion: 'Tls12'
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: serverless ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

var containers = [
  {
    name: exchangesContainerName
    partitionKey: '/requestId'
    // -1: TTL on; every exchange item carries its own ttl (EXCHANGE_TTL_SECONDS).
    ttl: -1
  }
  {
    name: recordsContainerName
    partitionKey: '/requestId'
    ttl: recordsTtlSeconds
  }
  {
    name: deadlettersContainerName
    partitionKey: '/requestId'
    ttl: deadlettersTtlSeconds
  }
  {
    name: affinityContainerName
    partitionKey: '/id'
    // -1: TTL on; every affinity item carries its own ttl.
    ttl: -1
  }
  {
    name: cacheContainerName
    partitionKey: '/id'
    // -1: TTL on; every cache entry carries its audience's ttl (AUDIENCE_POLICIES cache.ttl_seconds).
    ttl: -1
  }
  {
    name: budgetsContainerName
    partitionKey: '/id'
    // -1: TTL on, no default: a ledger is kept until deleted (spend against budget is reported from it).
    ttl: -1
  }
  {
    name: ownersContainerName
    partitionKey: '/id'
    // Owners outlive the objects they guard (an expired owner would make its object unreachable).
    ttl: -1
  }
]

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [for c in containers: {
  parent: database
  name: c.name
  properties: {
    resource: {
      id: c.name
      partitionKey: {
        paths: [
          c.partitionKey
        ]
        kind: 'Hash'
      }
      defaultTtl: c.ttl
      indexingPolicy: {
        indexingMode: 'consistent'
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/"_etag"/?'
          }
        ]
      }
    }
  }
}]

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}'
  params: {
    location: location
    name: 'pe-${name}'
    serviceId: account.id
    groupId: 'Sql'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: privateDnsZoneId
    tags: tags
  }
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
