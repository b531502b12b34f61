// API Management in External VNet mode: the only door to the gateway. Teams call it with their
// subscription key in the api-key header; the policies in policies/ (loaded here, never copied) set the
// caller's identity, apply the product's limits and forward to the function app's private endpoint.

@description('Azure region.')
param location string

@description('Prefix for resource names.')
param namePrefix string

@description('APIM instance name.')
param name string

@description('Classic tiers that support External VNet injection.')
@allowed([
  'Developer'
  'Premium'
])
param sku string

@description('Scale units.')
@minValue(1)
param capacity int

@description('Publisher e-mail (APIM notifications).')
param publisherEmail string

@description('Publisher name shown in the developer portal.')
param publisherName string

@description('APIM subnet (with the NSG from network.bicep).')
param subnetId string

@description('Function app name: backend host and the function key.')
param functionAppName string

@description('Function key APIM sends as x-functions-key (the same value function-key.bicep writes to the app).')
@secure()
param functionKey string

@description('Default host name of the function app (resolves to its private endpoint inside the VNet).')
param functionAppHostName string

@description('Application Insights component for the logger, diagnostics and token metrics.')
param appInsightsId string

@description('Instrumentation key of that component (stored as a secret named value).')
@secure()
param appInsightsInstrumentationKey string

@description('Seconds APIM waits for the function app response headers (streams may last longer once started).')
@minValue(30)
@maxValue(240)
param forwardTimeoutSeconds int

@description('Products and their limits: [{name, displayName, description, tokensPerMinute, tokenQuota, tokenQuotaPeriod, requestsPerMinute, subscriptionsLimit}].')
param products array

@description('Tags for every resource.')
param tags object

resource publicIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: 'pip-apim-${namePrefix}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Regional'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    dnsSettings: {
      domainNameLabel: toLower('${name}-${uniqueString(resourceGroup().id)}')
    }
  }
}

resource service 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  //checkov:skip=CKV_AZURE_174: External VNet mode: the gateway is the public entry point for teams by design; every call needs a subscription key and the backends are private
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: capacity
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: {
      subnetResourceId: subnetId
    }
    publicIpAddressId: publicIp.id
    customProperties: {
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168': 'False'
    }
  }
}

resource functionApp 'Microsoft.Web/sites@2023-12-01' existing = {
  name: functionAppName
}

// ---- Named values ------------------------------------------------------------------------------

resource functionKeyNamedValue 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = {
  parent: service
  name: 'gateway-function-key'
  properties: {
    displayName: 'gateway-function-key'
    secret: true
    value: functionKey
  }
}

resource forwardTimeout 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = {
  parent: service
  name: 'gateway-forward-timeout-seconds'
  properties: {
    displayName: 'gateway-forward-timeout-seconds'
    secret: false
    value: string(forwardTimeoutSeconds)
  }
}

resource appInsightsKey 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = {
  parent: service
  name: 'appinsights-instrumentation-key'
  properties: {
    displayName: 'appinsights-instrumentation-key'
    secret: true
    value: appInsightsInstrumentationKey
  }
}

// Four named values per product feed policies/fragments/gateway-limits.xml: <product>-tokens-per-minute,
// <product>-token-quota, <product>-token-quota-period, <product>-requests-per-minute.
resource tpmValues 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for p in products: {
  parent: service
  name: '${p.name}-tokens-per-minute'
  properties: {
    displayName: '${p.name}-tokens-per-minute'
    secret: false
    value: string(p.tokensPerMinute)
  }
}]

resource quotaValues 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for p in products: {
  parent: service
  name: '${p.name}-token-quota'
  properties: {
    displayName: '${p.name}-token-quota'
    secret: false
    value: string(p.tokenQuota)
  }
}]

resource quotaPeriodValues 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for p in products: {
  parent: service
  name: '${p.name}-token-quota-period'
  properties: {
    displayName: '${p.name}-token-quota-period'
    secret: false
    value: p.tokenQuotaPeriod
  }
}]

resource rpmValues 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for p in products: {
  parent: service
  name: '${p.name}-requests-per-minute'
  properties: {
    displayName: '${p.name}-requests-per-minute'
    secret: false
    value: string(p.requestsPerMinute)
  }
}]

// ---- Policy fragments (one job each; loaded from policies/, never copied) -----------------------

resource identityFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-identity'
  properties: {
    description: 'Remove client-supplied x-gateway-* headers, set the caller identity from the APIM context, strip the subscription key.'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-identity.xml')
  }
}

resource bearerFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-bearer'
  properties: {
    description: 'A key sent as Authorization: Bearer (OpenAI v1 clients) goes through APIM once more as api-key; no key at all is refused (401).'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-bearer.xml')
  }
}

resource limitsFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-limits'
  properties: {
    description: 'Per-subscription token rate, token quota and request rate from the product.'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-limits.xml')
  }
  dependsOn: [
    tpmValues
    quotaValues
    quotaPeriodValues
    rpmValues
  ]
}

resource metricsFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-metrics'
  properties: {
    description: 'Token metrics by subscription, product and deployment.'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-metrics.xml')
  }
}

resource backendFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-backend'
  properties: {
    description: 'Route to the function app with its function key.'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-backend.xml')
  }
  dependsOn: [
    functionKeyNamedValue
    backend
  ]
}

resource forwardFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-forward'
  properties: {
    description: 'Forward without buffering (server-sent events) with a long timeout.'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-forward.xml')
  }
  dependsOn: [
    forwardTimeout
  ]
}

resource errorsFragment 'Microsoft.ApiManagement/service/policyFragments@2023-05-01-preview' = {
  parent: service
  name: 'gateway-errors'
  properties: {
    description: 'AOAI-shaped error bodies for APIM refusals (401, 403, 429).'
    format: 'rawxml'
    value: loadTextContent('../../policies/fragments/gateway-errors.xml')
  }
}

// ---- Backend, logger, API ---------------------------------------------------------------------

resource backend 'Microsoft.ApiManagement/service/backends@2023-05-01-preview' = {
  parent: service
  name: 'gateway-function'
  properties: {
    description: 'The gateway function app, reached through its private endpoint.'
    protocol: 'http'
    url: 'https://${functionAppHostName}/openai'
    resourceId: '${environment().resourceManager}${substring(functionApp.id, 1)}'
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2023-05-01-preview' = {
  parent: service
  name: 'appinsights'
  properties: {
    loggerType: 'applicationInsights'
    description: 'Gateway Application Insights'
    resourceId: appInsightsId
    credentials: {
      instrumentationKey: '{{appinsights-instrumentation-key}}'
    }
  }
  dependsOn: [
    appInsightsKey
  ]
}

var operations = loadJsonContent('../apim-operations.json').operations

resource api 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'azure-openai'
  properties: {
    displayName: 'Azure OpenAI (gateway)'
    description: 'Azure OpenAI data plane through the operations gateway. Send your subscription key in the api-key header, the api-key query parameter or as Authorization: Bearer.'
    path: 'openai'
    protocols: [
      'https'
    ]
    serviceUrl: 'https://${functionAppHostName}/openai'
    // Not required here so that a bearer key can reach the gateway-bearer fragment, which refuses a call with no
    // key (401) and sends a bearer key through APIM again as api-key. A key that is sent is always checked, and
    // every product still requires a subscription.
    subscriptionRequired: false
    subscriptionKeyParameterNames: {
      header: 'api-key'
      query: 'api-key'
    }
    apiType: 'http'
  }
}

resource apiOperations 'Microsoft.ApiManagement/service/apis/operations@2023-05-01-preview' = [for op in operations: {
  parent: api
  name: op.name
  properties: {
    displayName: op.displayName
    method: op.method
    urlTemplate: op.urlTemplate
    templateParameters: op.templateParameters
  }
}]

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2023-05-01-preview' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('../../policies/api-policy.xml')
  }
  dependsOn: [
    identityFragment
    bearerFragment
    limitsFragment
    metricsFragment
    backendFragment
    forwardFragment
    errorsFragment
  ]
}

// Errors and a 10% sample of successful calls; never bodies (prompts and keys stay out of APIM logs).
resource diagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2023-05-01-preview' = {
  parent: api
  name: 'applicationinsights'
  properties: {
    loggerId: logger.id
    alwaysLog: 'allErrors'
    metrics: true
    logClientIp: true
    httpCorrelationProtocol: 'W3C'
    verbosity: 'information'
    operationNameFormat: 'Name'
    sampling: {
      samplingType: 'fixed'
      percentage: 10
    }
    frontend: {
      request: {
        headers: []
        body: {
          bytes: 0
        }
      }
      response: {
        headers: []
        body: {
          bytes: 0
        }
      }
    }
    backend: {
      request: {
        headers: []
        body: {
          bytes: 0
        }
      }
      response: {
        headers: []
        body: {
          bytes: 0
        }
      }
    }
  }
}

// ---- Products: one per tier of limits; teams get one subscription each ---------------------------

resource productResources 'Microsoft.ApiManagement/service/products@2023-05-01-preview' = [for p in products: {
  parent: service
  name: p.name
  properties: {
    displayName: p.displayName
    description: p.description
    subscriptionRequired: true
    approvalRequired: true
    subscriptionsLimit: p.subscriptionsLimit
    state: 'published'
    terms: 'Usage is metered per subscription; prompts and completions are logged for cost and safety review.'
  }
}]

resource productApis 'Microsoft.ApiManagement/service/products/apis@2023-05-01-preview' = [for (p, i) in products: {
  parent: productResources[i]
  name: api.name
}]

output gatewayUrl string = service.properties.gatewayUrl
output name string = service.name
output principalId string = service.identity.principalId
