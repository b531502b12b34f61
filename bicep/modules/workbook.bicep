// The gateway's Azure Monitor workbook (usage, cost and safety pages over the AOAIUsage events), for teams
// without Power BI. The JSON is maintained in powerbi/workbook/ and loaded here, never copied.

@description('Azure region.')
param location string

@description('Display name of the workbook.')
param displayName string

@description('Application Insights component the workbook queries.')
param appInsightsId string

@description('Tags for every resource.')
param tags object

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'aoai-gateway-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('../../powerbi/workbook/aoai-gateway.workbook.json')
  }
}

output id string = workbook.id
