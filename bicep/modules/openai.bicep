// A new Azure OpenAI account with its model deployments, keyless and private. Skip it (deployOpenAi=false)
// to put existing accounts behind the gateway instead (existingBackends in main.bicep).

@description('Azure region (must offer the models below).')
param location string

@description('Account name; also its custom subdomain.')
param name string

@description('Model deployments: [{name, model, version, sku, capacity, promptShields?}]; promptShields (block | annotate) overrides promptShieldsMode for that deployment.')
param deployments array

@description('Prompt Shields (jailbreak and indirect-attack detection in AOAI\'s own content filter) for deployments that do not set promptShields: block refuses a detected attack with a 400 content_filter; annotate lets it through and reports detected: true.')
@allowed([
  'block'
  'annotate'
])
param promptShieldsMode string = 'block'

@description('Subnet for private endpoints.')
param privateEndpointSubnetId string

@description('Private DNS zone privatelink.openai.azure.com.')
param privateDnsZoneId string

@description('Tags for every resource.')
param tags object

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: toLower(name)
    disableLocalAuth: true
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
    }
  }
}

// The severity filters of Microsoft.DefaultV2 (medium and above, prompt and completion), protected
// material on completions, and Prompt Shields on prompts in the mode the policy is named after.
var severityFilters = [for f in [
  { name: 'Hate', source: 'Prompt' }
  { name: 'Sexual', source: 'Prompt' }
  { name: 'Violence', source: 'Prompt' }
  { name: 'Selfharm', source: 'Prompt' }
  { name: 'Hate', source: 'Completion' }
  { name: 'Sexual', source: 'Completion' }
  { name: 'Violence', source: 'Completion' }
  { name: 'Selfharm', source: 'Completion' }
]: {
  name: f.name
  source: f.source
  severityThreshold: 'Medium'
  blocking: true
  enabled: true
}]
var protectedMaterial = [
  { name: 'Protected Material Text', source: 'Completion', blocking: true, enabled: true }
  { name: 'Protected Material Code', source: 'Completion', blocking: false, enabled: true }
]
var shieldModes = [
  'block'
  'annotate'
]

resource shieldPolicies 'Microsoft.CognitiveServices/accounts/raiPolicies@2024-10-01' = [for mode in shieldModes: {
  parent: account
  name: 'gateway-shields-${mode}'
  properties: {
    basePolicyName: 'Microsoft.DefaultV2'
    mode: 'Default'
    contentFilters: concat(severityFilters, protectedMaterial, [
      { name: 'Jailbreak', source: 'Prompt', blocking: mode == 'block', enabled: true }
      { name: 'Indirect Attack', source: 'Prompt', blocking: mode == 'block', enabled: true }
    ])
  }
}]

// One at a time: AOAI rejects concurrent deployment writes on one account.
@batchSize(1)
resource modelDeployments 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = [for d in deployments: {
  parent: account
  dependsOn: [
    shieldPolicies
  ]
  name: d.name
  sku: {
    name: d.sku
    capacity: d.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: d.model
      version: d.version
    }
    raiPolicyName: 'gateway-shields-${d.?promptShields ?? promptShieldsMode}'
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}]

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}'
  params: {
    location: location
    name: 'pe-${name}'
    serviceId: account.id
    groupId: 'account'
    subnetId: privateEndpointSubnetId
    privateDnsZoneId: privateDnsZoneId
    tags: tags
  }
}

output id string = account.id
output name string = account.name
output endpoint string = 'https://${toLower(name)}.openai.azure.com'
