// The gateway's Function App on Flex Consumption: Python 3.13, VNet-integrated, system-assigned identity,
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

@description('GATEWAY_BACKENDS: JSON list of AOAI backends (see proxy/routing/backends.py).')
param gatewayBackendsJson string

@description('Cosmos DB account endpoint (COSMOS_ENDPOINT).')
param cosmosEndpoint string
@description('Cosmos DB database (COSMOS_DATABASE).')
param cosmosDatabaseName string
@description('Container of raw exchanges (COSMOS_EXCHANGES_CONTAINER).')
param cosmosExchangesContainerName string
@description('Container of usage records (COSMOS_RECORDS_CONTAINER).')
param cosmosRecordsContainerName string
@description('Container of dead letters (COSMOS_DEADLETTERS_CONTAINER).')
param cosmosDeadlettersContainerName string

@description('Container of Responses API affinity entries (COSMOS_AFFINITY_CONTAINER).')
param cosmosAffinityContainerName string

@description('Container of exact response cache entries (COSMOS_CACHE_CONTAINER).')
param cosmosCacheContainerName string

@description('Per-audience allow-lists and response cache (AUDIENCE_POLICIES).')
param audiencePolicies object

@description('Container of stored-object owners (COSMOS_OWNERS_CONTAINER).')
param cosmosOwnersContainerName string

@description('Logger the Azure Monitor handler sits on (PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME); empty = root logger.')
param appInsightsLoggerName string

@description('TTL of stored raw exchanges in seconds.')
param exchangeTtlSeconds int

@description('Event Hubs fully qualified namespace (EventHubConnection__fullyQualifiedNamespace).')
param eventHubsNamespace string
@description('Event hub name (EVENT_HUB_NAME).')
param eventHubName string
@description('Consumer group of the parser (EVENT_HUB_CONSUMER_GROUP).')
param eventHubConsumerGroup string

@description('Ask AOAI for usage on streams the client did not ask for, and hide that chunk from the client.')
param injectStreamUsage bool

@description('Largest request body the proxy accepts, in bytes.')
param maxRequestBodyBytes int

@description('Failover and circuit breaker: {maxAttempts, retryDeadlineSeconds, circuitFailures, circuitWindowSeconds, circuitCooldownSeconds, responsesAffinityTtlSeconds}.')
param routing object

@description('Upstream pool and timeouts: {connectTimeoutSeconds, firstByteTimeoutSeconds, idleTimeoutSeconds, totalTimeoutSeconds, maxConnections}.')
param upstream object

@description('CAPTURE_OUTBOX_DIR (empty = instance temp dir).')
param captureOutboxDir string

@description('DEPLOYMENT_MODELS: deployment name -> {model, type} for cost.')
param deploymentModels object

@description('CAPTURE_LEVELS: product or subscription:<id> -> full | redacted | metadata | none.')
param captureLevels object

@description('RETENTION: product or subscription:<id> -> {exchanges_days, records_days}.')
param retention object

@description('BUDGETS: list of budgets (docs/budgets.md).')
param budgets array

@description('BUDGET_TEAMS: team name -> subscription ids.')
param budgetTeams object

@description('Container of budget ledgers (COSMOS_BUDGETS_CONTAINER).')
param cosmosBudgetsContainerName string

@description('PARSER_MAX_CONCURRENCY: events of one batch the parser handles at the same time.')
param parserMaxConcurrency int

@description('Content Safety endpoint (empty: content safety off).')
param contentSafetyEndpoint string

@description('Content Safety options (see main.bicep contentSafetyOptions).')
param contentSafety object

@description('Maximum instances the app scales out to (Flex Consumption allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Concurrent HTTP requests per instance (Flex Consumption gives a Python app 1 when unset).')
@minValue(1)
@maxValue(1000)
param perInstanceConcurrency int

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
  //checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is regional and changes the plan cost; enable it per region when available (the app is stateless, scale-out replaces lost instances)
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
  //checkov:skip=CKV_AZURE_222: publicNetworkAccess is Disabled unless deploymentAllowedIpRanges is set, and even then the main site denies all public traffic (ipSecurityRestrictionsDefaultAction Deny); only listed IPs reach the SCM site
  //checkov:skip=CKV_AZURE_17: callers are APIM only, over the private endpoint, authenticated with the function key; client certificates would add a second secret to rotate without closing any path
  //checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; always-ready instances are a cost decision per deployment (functionAppConfig.scaleAndConcurrency.alwaysReady)
  //checkov:skip=CKV_AZURE_213: App Service health check is not available on Flex Consumption; the proxy exposes /health for probes from inside the VNet
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
      // The settings the code reads (shared/settings.py, local.settings.sample.json), in Azure form.
      // FUNCTIONS_WORKER_RUNTIME and the Python version are not app settings on Flex Consumption: they are
      // functionAppConfig.runtime below. AzureWebJobsStorage is the identity form (__accountName).
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'PYTHON_ENABLE_INIT_INDEXING'
          value: '1'
        }
        {
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME'
          value: appInsightsLoggerName
        }
        {
          name: 'GATEWAY_BACKENDS'
          value: gatewayBackendsJson
        }
        {
          name: 'LOG_STORE'
          value: 'cosmos'
        }
        {
          name: 'COSMOS_ENDPOINT'
          value: cosmosEndpoint
        }
        {
          name: 'COSMOS_DATABASE'
          value: cosmosDatabaseName
        }
        {
          name: 'COSMOS_EXCHANGES_CONTAINER'
          value: cosmosExchangesContainerName
        }
        {
          name: 'COSMOS_RECORDS_CONTAINER'
          value: cosmosRecordsContainerName
        }
        {
          name: 'COSMOS_DEADLETTERS_CONTAINER'
          value: cosmosDeadlettersContainerName
        }
        {
          name: 'COSMOS_AFFINITY_CONTAINER'
          value: cosmosAffinityContainerName
        }
        {
          name: 'COSMOS_CACHE_CONTAINER'
          value: cosmosCacheContainerName
        }
        {
          name: 'AUDIENCE_POLICIES'
          value: string(audiencePolicies)
        }
        {
          name: 'COSMOS_BUDGETS_CONTAINER'
          value: cosmosBudgetsContainerName
        }
        {
          name: 'COSMOS_OWNERS_CONTAINER'
          value: cosmosOwnersContainerName
        }
        {
          name: 'EXCHANGE_TTL_SECONDS'
          value: string(exchangeTtlSeconds)
        }
        {
          name: 'EVENT_CHANNEL'
          value: 'eventhub'
        }
        {
          name: 'EventHubConnection__fullyQualifiedNamespace'
          value: eventHubsNamespace
        }
        {
          name: 'EVENT_HUB_NAME'
          value: eventHubName
        }
        {
          name: 'EVENT_HUB_CONSUMER_GROUP'
          value: eventHubConsumerGroup
        }
        {
          name: 'INJECT_STREAM_USAGE'
          value: injectStreamUsage ? 'true' : 'false'
        }
        {
          name: 'MAX_REQUEST_BODY_BYTES'
          value: string(maxRequestBodyBytes)
        }
        {
          // A body trickled slower than this is cut (408): the front end does not bound it.
          name: 'REQUEST_BODY_TIMEOUT_SECONDS'
          value: '120'
        }
        {
          name: 'MAX_REQUEST_HEADER_BYTES'
          value: '32768'
        }
        {
          name: 'UPSTREAM_CONNECT_TIMEOUT_SECONDS'
          value: string(upstream.connectTimeoutSeconds)
        }
        {
          name: 'UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS'
          value: string(upstream.firstByteTimeoutSeconds)
        }
        {
          name: 'UPSTREAM_IDLE_TIMEOUT_SECONDS'
          value: string(upstream.idleTimeoutSeconds)
        }
        {
          name: 'UPSTREAM_TOTAL_TIMEOUT_SECONDS'
          value: string(upstream.totalTimeoutSeconds)
        }
        {
          name: 'UPSTREAM_MAX_CONNECTIONS'
          value: string(upstream.maxConnections)
        }
        {
          name: 'CAPTURE_OUTBOX_DIR'
          value: captureOutboxDir
        }
        {
          // Spilled exchanges survive the instance: the app's own storage account, by identity.
          name: 'CAPTURE_SPILL_BLOB_URL'
          value: storageBlobEndpoint
        }
        {
          name: 'CAPTURE_SPILL_CONTAINER'
          value: 'capture-spill'
        }
        {
          name: 'RECONCILE_AFTER_SECONDS'
          value: '300'
        }
        {
          name: 'RECONCILE_LOOKBACK_SECONDS'
          value: '3600'
        }
        {
          name: 'PARSER_EXCHANGE_BUDGET_SECONDS'
          value: '30'
        }
        {
          name: 'PARSER_MAX_EXCHANGE_BYTES'
          value: '64000000'
        }
        {
          name: 'GATEWAY_MAX_ATTEMPTS'
          value: string(routing.maxAttempts)
        }
        {
          name: 'GATEWAY_RETRY_DEADLINE_SECONDS'
          value: string(routing.retryDeadlineSeconds)
        }
        {
          name: 'GATEWAY_CIRCUIT_FAILURES'
          value: string(routing.circuitFailures)
        }
        {
          name: 'GATEWAY_CIRCUIT_WINDOW_SECONDS'
          value: string(routing.circuitWindowSeconds)
        }
        {
          name: 'GATEWAY_CIRCUIT_COOLDOWN_SECONDS'
          value: string(routing.circuitCooldownSeconds)
        }
        {
          name: 'RESPONSES_AFFINITY_TTL_SECONDS'
          value: string(routing.responsesAffinityTtlSeconds)
        }
        {
          name: 'DEPLOYMENT_MODELS'
          value: string(deploymentModels)
        }
        {
          name: 'CAPTURE_LEVELS'
          value: string(captureLevels)
        }
        {
          name: 'RETENTION'
          value: string(retention)
        }
        {
          name: 'BUDGETS'
          value: string(budgets)
        }
        {
          name: 'BUDGET_TEAMS'
          value: string(budgetTeams)
        }
        {
          name: 'PARSER_MAX_CONCURRENCY'
          value: string(parserMaxConcurrency)
        }
        {
          name: 'CONTENT_SAFETY_ENDPOINT'
          value: contentSafetyEndpoint
        }
        {
          name: 'CONTENT_SAFETY_ANALYZE_PROMPT'
          value: contentSafety.analyzePrompt ? 'true' : 'false'
        }
        {
          name: 'CONTENT_SAFETY_PROMPT_SHIELDS'
          value: contentSafety.promptShields ? 'true' : 'false'
        }
        {
          name: 'CONTENT_SAFETY_THRESHOLDS'
          value: string(contentSafety.thresholds)
        }
        {
          name: 'CONTENT_SAFETY_BLOCKLISTS'
          value: contentSafety.blocklists
        }
        {
          name: 'CONTENT_SAFETY_HALT_ON_BLOCKLIST_HIT'
          value: contentSafety.haltOnBlocklistHit ? 'true' : 'false'
        }
        {
          name: 'CONTENT_SAFETY_OUTPUT_TYPE'
          value: contentSafety.outputType
        }
        {
          name: 'CONTENT_SAFETY_WINDOW_CHARS'
          value: string(contentSafety.windowChars)
        }
        {
          name: 'CONTENT_SAFETY_WINDOW_OVERLAP'
          value: string(contentSafety.windowOverlap)
        }
        {
          name: 'CONTENT_SAFETY_STREAM_WINDOW_CHARS'
          value: string(contentSafety.streamWindowChars)
        }
        {
          name: 'CONTENT_SAFETY_STREAM_WINDOW_OVERLAP'
          value: string(contentSafety.streamWindowOverlap)
        }
        {
          name: 'CONTENT_SAFETY_MODES'
          value: string(contentSafety.modes)
        }
        {
          name: 'CONTENT_SAFETY_FAIL_MODES'
          value: string(contentSafety.failModes)
        }
        {
          name: 'CONTENT_SAFETY_MAX_RETRIES'
          value: string(contentSafety.maxRetries)
        }
        {
          name: 'CONTENT_SAFETY_RETRY_BACKOFF_SECONDS'
          value: string(contentSafety.retryBackoffSeconds)
        }
        {
          name: 'CONTENT_SAFETY_MAX_RETRY_AFTER_SECONDS'
          value: string(contentSafety.maxRetryAfterSeconds)
        }
        {
          name: 'CONTENT_SAFETY_TIMEOUT_SECONDS'
          value: string(contentSafety.timeoutSeconds)
        }
        {
          name: 'CONTENT_SAFETY_MAX_CONCURRENCY'
          value: string(contentSafety.maxConcurrency)
        }
      ]
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
        triggers: {
          http: {
            perInstanceConcurrency: perInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
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
