// The function key APIM sends as x-functions-key, created at deployment with a value the template chose
// (never read back from the app): a new Flex Consumption app has no host keys until its host has run
// code, so reading them while provisioning fails or returns nothing, and `azd up` never gets to a
// second provisioning round.
//
// The host keeps its keys in its storage account (container azure-webjobs-secrets) with the app's
// identity, so main.bicep deploys this module after the Storage Blob Data Owner assignment and after
// APIM (30-45 minutes on a first deployment: the assignment has propagated long before).

@description('Function app name.')
param functionAppName string

@description('Name of the key (one per caller; APIM is the only one).')
param keyName string = 'apim'

@description('The key value (APIM holds the same value in its named value gateway-function-key).')
@secure()
@minLength(32)
param keyValue string

resource functionKey 'Microsoft.Web/sites/host/functionKeys@2023-12-01' = {
  name: '${functionAppName}/default/${keyName}'
  properties: {
    name: keyName
    value: keyValue
  }
}
