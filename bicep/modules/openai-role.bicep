// Cognitive Services OpenAI User for the gateway on an existing AOAI account in another resource group
// (deployed at that resource group's scope by main.bicep).

@description('Existing AOAI account name in this resource group.')
param accountName string

@description('Principal id of the function app system-assigned identity.')
param principalId string

var openAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, openAiUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
