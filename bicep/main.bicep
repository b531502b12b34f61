// The AOAI operations gateway in one resource group: VNet, APIM (External VNet), the Flex Consumption
// function app, Cosmos DB, Event Hubs, Storage, monitoring, AOAI (new or existing), optional Content Safety,
// private endpoints for every data service, and least-privilege role assignments.
// Deploy: see docs/deploy.md (`az deployment group create ... -f bicep/main.bicep -p @bicep/main.parameters.json`
// or `azd up`).

targetScope = 'resourceGroup'

@description('Short environment name used in resource names (letters, digits, hyphens).')
@minLength(2)
@maxLength(16)
param environmentName string = 'aoaigw'

@description('Azure region of every resource (the AOAI models must be offered there when deployOpenAi is true).')
param location string = resourceGroup().location

@description('Tags for every resource.')
param tags object = {
  application: 'aoai-gateway'
}

// ---- Network ----

@description('VNet address space.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('APIM subnet (External VNet mode).')
param apimSubnetPrefix string = '10.40.0.0/24'

@description('Function app VNet integration subnet (delegated to Microsoft.App/environments).')
param functionSubnetPrefix string = '10.40.1.0/24'

@description('Private endpoint subnet.')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

// ---- API Management ----

@description('APIM tier: Developer (no SLA, for a first deployment) or Premium (production, multi-zone). Both support External VNet mode. Creation takes 30-45 minutes.')
@allowed([
  'Developer'
  'Premium'
])
param apimSku string = 'Developer'

@description('APIM scale units.')
@minValue(1)
param apimCapacity int = 1

@description('E-mail of the APIM publisher (receives APIM notifications).')
param publisherEmail string = 'platform-team@example.com'

@description('Publisher name shown in the developer portal.')
param publisherName string = 'Platform team'

@description('Seconds APIM waits for the response headers of the function app. A started stream may run longer; the Azure load balancer closes idle connections after about 230-240 s.')
@minValue(30)
@maxValue(240)
param forwardTimeoutSeconds int = 240

@description('Products and limits per subscription. The names starter, standard and premium are referenced by policies/fragments/gateway-limits.xml; change the numbers freely. tokenQuotaPeriod: Hourly, Daily, Weekly, Monthly or Yearly.')
param products array = [
  {
    name: 'starter'
    displayName: 'Starter'
    description: 'Trials and prototypes: small token budget.'
    tokensPerMinute: 10000
    tokenQuota: 1000000
    tokenQuotaPeriod: 'Monthly'
    requestsPerMinute: 60
    subscriptionsLimit: 100
  }
  {
    name: 'standard'
    displayName: 'Standard'
    description: 'Production workloads of one team.'
    tokensPerMinute: 50000
    tokenQuota: 20000000
    tokenQuotaPeriod: 'Monthly'
    requestsPerMinute: 300
    subscriptionsLimit: 100
  }
  {
    name: 'premium'
    displayName: 'Premium'
    description: 'High-volume production workloads.'
    tokensPerMinute: 200000
    tokenQuota: 200000000
    tokenQuotaPeriod: 'Monthly'
    requestsPerMinute: 1200
    subscriptionsLimit: 20
  }
]

// ---- Azure OpenAI backends ----

@description('Create a new AOAI account with the deployments below. Set false to use only existingBackends.')
param deployOpenAi bool = true

@description('Prompt Shields on the new AOAI account\'s deployments (content filter policies gateway-shields-block / -annotate): block or annotate; a deployment\'s own promptShields field wins.')
@allowed([
  'block'
  'annotate'
])
param promptShieldsMode string = 'block'

@description('Model deployments of the new AOAI account: [{name, model, version, sku, capacity, promptShields?}] (capacity in thousands of tokens per minute; promptShields: block | annotate).')
param openAiDeployments array = [
  {
    name: 'gpt-4o-mini'
    model: 'gpt-4o-mini'
    version: '2024-07-18'
    sku: 'GlobalStandard'
    capacity: 50
  }
  {
    name: 'text-embedding-3-small'
    model: 'text-embedding-3-small'
    version: '1'
    sku: 'Standard'
    capacity: 50
  }
]

@description('Existing AOAI endpoints, in GATEWAY_BACKENDS form (see proxy/routing/backends.py), e.g. [{"name": "aoai-swe", "endpoint": "https://my-aoai.openai.azure.com", "auth": {"type": "managed_identity"}, "deployments": ["*"], "priority": 2}].')
param existingBackends array = []

@description('Existing AOAI accounts that get the Cognitive Services OpenAI User role for the gateway: [{"resourceGroup": "rg-aoai", "accountName": "my-aoai"}] ; add "subscriptionId" for an account in another subscription of the tenant.')
param existingOpenAiAccounts array = []

// ---- Data, telemetry, safety ----

@description('Deploy Azure AI Content Safety for the parser checks.')
param enableContentSafety bool = false

@description('Per-audience policy (AUDIENCE_POLICIES): APIM product name or subscription:<id> -> {deployments, operations, cache: {ttl_seconds, shared}}. Empty: every audience may use every deployment, no cache.')
param audiencePolicies object = {}

@description('Cosmos DB serverless (pay per request). Set false for provisioned autoscale throughput.')
param cosmosServerless bool = true

@description('Autoscale maximum RU/s of the Cosmos DB database when not serverless.')
param cosmosAutoscaleMaxThroughput int = 4000

@description('How long raw exchanges (prompts and completions) are kept, in seconds (EXCHANGE_TTL_SECONDS).')
param exchangeTtlSeconds int = 604800

@description('How long usage records are kept in Cosmos DB, in seconds; -1 keeps them until deleted.')
param recordsTtlSeconds int = -1

@description('How long dead letters are kept, in seconds.')
param deadlettersTtlSeconds int = 2592000

@description('Event Hubs tier.')
@allowed([
  'Standard'
  'Premium'
])
param eventHubsSku string = 'Standard'

@description('Event hub partitions (upper bound of parallel parser instances).')
param eventHubPartitionCount int = 4

@description('Consumer group of the parser.')
param eventHubConsumerGroup string = 'parser'

@description('Days Log Analytics keeps data.')
param logRetentionInDays int = 90

@description('Logger the Azure Monitor log handler sits on (PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME). Empty: the root logger, so every app log at the configured level is exported; set e.g. "gateway" to export only that logger tree.')
param appInsightsLoggerName string = ''

@description('Deploy the Azure Monitor workbook (powerbi/workbook/aoai-gateway.workbook.json).')
param deployWorkbook bool = true

// ---- Function app ----

@description('Ask AOAI for usage on streams the client did not ask for, and hide that chunk (INJECT_STREAM_USAGE).')
param injectStreamUsage bool = true

@description('Largest request body the proxy accepts, in bytes (MAX_REQUEST_BODY_BYTES).')
param maxRequestBodyBytes int = 26214400

@description('Failover and circuit breaker (GATEWAY_MAX_ATTEMPTS, GATEWAY_RETRY_DEADLINE_SECONDS, GATEWAY_CIRCUIT_*, RESPONSES_AFFINITY_TTL_SECONDS). Seconds may be decimal strings such as "2.5".')
param routing object = {
  maxAttempts: 3
  retryDeadlineSeconds: 30
  circuitFailures: 5
  circuitWindowSeconds: 30
  circuitCooldownSeconds: 30
  responsesAffinityTtlSeconds: 2592000
}

@description('Upstream connection pool and timeouts (UPSTREAM_*). The first-byte timeout stays under the 230 s the Azure load balancer allows an HTTP trigger.')
param upstream object = {
  connectTimeoutSeconds: 10
  firstByteTimeoutSeconds: 230
  idleTimeoutSeconds: 120
  totalTimeoutSeconds: 1800
  maxConnections: 256
}

@description('CAPTURE_OUTBOX_DIR: where the proxy spills exchanges it could not store (empty = the instance temp dir; replayed on the next start of that instance).')
param captureOutboxDir string = ''

@description('DEPLOYMENT_MODELS: deployment name -> {"model": "gpt-4o-2024-08-06", "type": "global|data_zone|regional|provisioned"}, for cost; unmapped deployments use the model AOAI reports.')
param deploymentModels object = {}

@description('CAPTURE_LEVELS: what is kept per audience, APIM product name or "subscription:<id>" -> "full" | "redacted" | "metadata" | "none" (docs/privacy.md); unlisted audiences: full.')
param captureLevels object = {}

@description('RETENTION: per audience, product or "subscription:<id>" -> {"exchanges_days": 30, "records_days": 400} (-1: until deleted); unlisted: exchangeTtlSeconds, records per recordsTtlSeconds.')
param retention object = {}

@description('BUDGETS: dollar budgets and token quotas per subscription, product or team, e.g. [{"name": "team-a", "scope": "team:a", "amount": 500, "period": "month", "soft_percent": 80}] (docs/budgets.md).')
param budgets array = []

@description('BUDGET_TEAMS: team name -> subscription ids, for budgets with scope team:<name>.')
param budgetTeams object = {}

@description('Events of one Event Hub batch the parser handles at the same time (PARSER_MAX_CONCURRENCY); times contentSafetyOptions.maxConcurrency it bounds the concurrent Content Safety calls per instance.')
@minValue(1)
param parserMaxConcurrency int = 8

@description('Content Safety options (CONTENT_SAFETY_*), used when enableContentSafety is true; thresholds, modes and failModes are per product with a "default". See docs/settings.md.')
param contentSafetyOptions object = {
  analyzePrompt: false
  promptShields: false
  thresholds: {
    default: {
      Hate: 4
      SelfHarm: 4
      Sexual: 4
      Violence: 4
    }
  }
  blocklists: ''
  haltOnBlocklistHit: false
  outputType: 'FourSeverityLevels'
  windowChars: 10000
  windowOverlap: 200
  streamWindowChars: 1000
  streamWindowOverlap: 100
  modes: {
    default: 'monitor'
  }
  failModes: {
    default: 'open'
  }
  maxRetries: 3
  retryBackoffSeconds: '0.5'
  maxRetryAfterSeconds: 10
  timeoutSeconds: 10
  maxConcurrency: 4
}

@description('Maximum function app instances (Flex Consumption allows 40 to 1000; the subscription\'s regional memory quota caps the total). Size with functionHttpPerInstanceConcurrency: docs/deploy.md "Sizing".')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Concurrent HTTP requests (streams) one instance serves: functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency. Unset, Flex Consumption gives a Python app 1. 100 fits a 2048 MB (1 vCPU) instance with room to spare by bench/results/latest.md (about 2 ms CPU per second and at most 672 KB per concurrent stream); about 200 on 4096 MB. See docs/deploy.md "Sizing".')
@minValue(1)
@maxValue(1000)
param functionHttpPerInstanceConcurrency int = 100

@description('Memory per function app instance in MB.')
@allowed([
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Function key APIM sends as x-functions-key (at least 32 characters), written to the function app and to the APIM named value gateway-function-key at deployment. Empty: derived from the subscription, resource group and environmentName, so every re-deployment keeps it; pass your own secret to have a key nobody can derive, or a new one to rotate it (docs/deploy.md).')
@secure()
param gatewayFunctionKey string = ''

@description('CIDR ranges allowed to reach the function app deployment (SCM) endpoint, e.g. ["203.0.113.7/32"] for the machine that runs func publish / azd deploy. Empty: the app has no public endpoint at all; deploy from inside the VNet.')
param deploymentAllowedIpRanges array = []

// ---- Names ----

var suffix = take(uniqueString(resourceGroup().id, environmentName), 6)
var prefix = toLower(environmentName)
var compact = take(replace(prefix, '-', ''), 10)
var names = {
  apim: 'apim-${prefix}-${suffix}'
  functionApp: 'func-${prefix}-${suffix}'
  storage: 'st${compact}${suffix}'
  cosmos: 'cosmos-${prefix}-${suffix}'
  eventHubs: 'evhns-${prefix}-${suffix}'
  openAi: 'aoai-${prefix}-${suffix}'
  contentSafety: 'cs-${prefix}-${suffix}'
}
var cosmosDatabaseName = 'gateway'
var cosmosContainers = {
  exchanges: 'exchanges'
  records: 'records'
  deadletters: 'deadletters'
  affinity: 'affinity'
  cache: 'cache'
  budgets: 'budgets'
  owners: 'owners'
}
var eventHubName = 'exchanges'
// Chosen here, never read back from the app: a new Flex Consumption app has no host keys before its host ran code.
var derivedFunctionKey = '${replace(guid(subscription().id, resourceGroup().id, environmentName, 'gateway-function-key'), '-', '')}${uniqueString(resourceGroup().id, environmentName, 'apim')}'
var functionKeyValue = empty(gatewayFunctionKey) ? derivedFunctionKey : gatewayFunctionKey
var deploymentContainerName = 'app-package'

// ---- Modules ----

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    location: location
    namePrefix: prefix
    addressPrefix: vnetAddressPrefix
    apimSubnetPrefix: apimSubnetPrefix
    functionSubnetPrefix: functionSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    tags: tags
  }
}

module dns 'modules/private-dns.bicep' = {
  name: 'private-dns'
  params: {
    vnetId: network.outputs.vnetId
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    namePrefix: prefix
    retentionInDays: logRetentionInDays
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: names.storage
    deploymentContainerName: deploymentContainerName
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    blobZoneId: dns.outputs.blobZoneId
    queueZoneId: dns.outputs.queueZoneId
    tableZoneId: dns.outputs.tableZoneId
    tags: tags
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    name: names.cosmos
    serverless: cosmosServerless
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    databaseName: cosmosDatabaseName
    exchangesContainerName: cosmosContainers.exchanges
    recordsContainerName: cosmosContainers.records
    deadlettersContainerName: cosmosContainers.deadletters
    affinityContainerName: cosmosContainers.affinity
    cacheContainerName: cosmosContainers.cache
    budgetsContainerName: cosmosContainers.budgets
    ownersContainerName: cosmosContainers.owners
    recordsTtlSeconds: recordsTtlSeconds
    deadlettersTtlSeconds: deadlettersTtlSeconds
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: dns.outputs.cosmosZoneId
    tags: tags
  }
}

module eventHubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  params: {
    location: location
    name: names.eventHubs
    sku: eventHubsSku
    hubName: eventHubName
    consumerGroupName: eventHubConsumerGroup
    partitionCount: eventHubPartitionCount
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: dns.outputs.eventHubsZoneId
    tags: tags
  }
}

module openAi 'modules/openai.bicep' = if (deployOpenAi) {
  name: 'openai'
  params: {
    location: location
    name: names.openAi
    deployments: openAiDeployments
    promptShieldsMode: promptShieldsMode
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: dns.outputs.openAiZoneId
    tags: tags
  }
}

module contentSafety 'modules/content-safety.bicep' = if (enableContentSafety) {
  name: 'content-safety'
  params: {
    location: location
    name: names.contentSafety
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneId: dns.outputs.cognitiveServicesZoneId
    tags: tags
  }
}

var newBackends = deployOpenAi ? [
  {
    name: names.openAi
    endpoint: 'https://${toLower(names.openAi)}.openai.azure.com'
    auth: {
      type: 'managed_identity'
    }
    deployments: [
      '*'
    ]
  }
] : []

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    namePrefix: prefix
    name: names.functionApp
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    integrationSubnetId: network.outputs.functionSubnetId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    sitesZoneId: dns.outputs.sitesZoneId
    appInsightsConnectionString: monitoring.outputs.connectionString
    gatewayBackendsJson: string(concat(newBackends, existingBackends))
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmosDatabaseName
    cosmosExchangesContainerName: cosmosContainers.exchanges
    cosmosRecordsContainerName: cosmosContainers.records
    cosmosDeadlettersContainerName: cosmosContainers.deadletters
    cosmosAffinityContainerName: cosmosContainers.affinity
    cosmosCacheContainerName: cosmosContainers.cache
    audiencePolicies: audiencePolicies
    cosmosBudgetsContainerName: cosmosContainers.budgets
    cosmosOwnersContainerName: cosmosContainers.owners
    appInsightsLoggerName: appInsightsLoggerName
    exchangeTtlSeconds: exchangeTtlSeconds
    eventHubsNamespace: eventHubs.outputs.fullyQualifiedNamespace
    eventHubName: eventHubs.outputs.hubName
    eventHubConsumerGroup: eventHubConsumerGroup
    injectStreamUsage: injectStreamUsage
    maxRequestBodyBytes: maxRequestBodyBytes
    routing: routing
    upstream: upstream
    captureOutboxDir: captureOutboxDir
    deploymentModels: deploymentModels
    captureLevels: captureLevels
    retention: retention
    budgets: budgets
    budgetTeams: budgetTeams
    parserMaxConcurrency: parserMaxConcurrency
    contentSafetyEndpoint: enableContentSafety ? 'https://${toLower(names.contentSafety)}.cognitiveservices.azure.com' : ''
    contentSafety: contentSafetyOptions
    maximumInstanceCount: functionMaximumInstanceCount
    instanceMemoryMB: functionInstanceMemoryMB
    perInstanceConcurrency: functionHttpPerInstanceConcurrency
    deploymentAllowedIpRanges: deploymentAllowedIpRanges
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: functionApp.outputs.principalId
    openAiAccountName: deployOpenAi ? names.openAi : ''
    contentSafetyAccountName: enableContentSafety ? names.contentSafety : ''
    cosmosAccountName: cosmos.outputs.name
    eventHubsNamespaceName: eventHubs.outputs.namespaceName
    eventHubName: eventHubs.outputs.hubName
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
  dependsOn: [
    openAi
    contentSafety
  ]
}

module existingOpenAiRoles 'modules/openai-role.bicep' = [for (account, i) in existingOpenAiAccounts: {
  name: 'openai-role-${i}'
  scope: resourceGroup(contains(account, 'subscriptionId') ? account.subscriptionId : subscription().subscriptionId, account.resourceGroup)
  params: {
    accountName: account.accountName
    principalId: functionApp.outputs.principalId
  }
}]

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    location: location
    namePrefix: prefix
    name: names.apim
    sku: apimSku
    capacity: apimCapacity
    publisherEmail: publisherEmail
    publisherName: publisherName
    subnetId: network.outputs.apimSubnetId
    functionAppName: functionApp.outputs.name
    functionAppHostName: functionApp.outputs.defaultHostName
    functionKey: functionKeyValue
    appInsightsId: monitoring.outputs.appInsightsId
    appInsightsInstrumentationKey: monitoring.outputs.instrumentationKey
    forwardTimeoutSeconds: forwardTimeoutSeconds
    products: products
    tags: tags
  }
  dependsOn: [
    roles
  ]
}

// After the storage role (the host keeps its keys in blob storage with the app's identity) and after APIM,
// whose creation (30-45 minutes on a first deployment) leaves that role assignment ample time to propagate.
module functionKey 'modules/function-key.bicep' = {
  name: 'function-key'
  params: {
    functionAppName: functionApp.outputs.name
    keyValue: functionKeyValue
  }
  dependsOn: [
    roles
    apim
  ]
}

module workbook 'modules/workbook.bicep' = if (deployWorkbook) {
  name: 'workbook'
  params: {
    location: location
    displayName: 'AOAI gateway usage'
    appInsightsId: monitoring.outputs.appInsightsId
    tags: tags
  }
}

@description('Base URL teams use as azure_endpoint (the API lives under /openai).')
output AZURE_APIM_GATEWAY_URL string = apim.outputs.gatewayUrl

@description('APIM instance name (for az apim commands).')
output AZURE_APIM_NAME string = apim.outputs.name

@description('Function app name (for func azure functionapp publish).')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Application Insights component name.')
output AZURE_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName

@description('Application Insights application id (python -m devhost smoke --appinsights-app-id).')
output AZURE_APPINSIGHTS_APP_ID string = monitoring.outputs.appId

@description('Cosmos DB endpoint (python -m devhost smoke --cosmos-endpoint, from inside the VNet).')
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
