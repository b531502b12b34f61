// Optional: the Realtime API (WebSocket) through APIM's own WebSocket API, in front of one AOAI account.
// The gateway's HTTP-triggered function cannot hold a WebSocket and answers a WebSocket upgrade with an
// error naming this route. Deploy it beside main.bicep's APIM when teams need the Realtime API:
//   az deployment group create -g <rg> -f bicep/modules/apim-realtime.bicep -p apimName=<apim> aoaiEndpoint=<https://...>
// Clients connect to wss://<apim host>/openai/realtime?api-version=...&deployment=... with the same
// subscription key (api-key header or query). What it records and what it cannot: docs/apim.md.

@description('Name of the existing API Management service (main.bicep output AZURE_APIM_NAME).')
param apimName string

@description('Endpoint of the AOAI account that serves the realtime deployments, e.g. https://my-aoai.openai.azure.com. APIM\'s managed identity needs Cognitive Services OpenAI User on it.')
param aoaiEndpoint string

resource service 'Microsoft.ApiManagement/service@2023-05-01-preview' existing = {
  name: apimName
}

var aoaiHost = replace(replace(aoaiEndpoint, 'https://', ''), '/', '')

resource realtimeApi 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'azure-openai-realtime'
  properties: {
    displayName: 'Azure OpenAI Realtime (WebSocket)'
    description: 'The Realtime API over WebSocket, relayed by APIM (the gateway function cannot hold a WebSocket). Same subscription keys as the gateway API.'
    path: 'openai/realtime'
    type: 'websocket'
    apiType: 'websocket'
    protocols: [
      'wss'
    ]
    serviceUrl: 'wss://${aoaiHost}/openai/realtime'
    subscriptionRequired: true
    subscriptionKeyParameterNames: {
      header: 'api-key'
      query: 'api-key'
    }
  }
}

resource handshake 'Microsoft.ApiManagement/service/apis/operations@2023-05-01-preview' existing = {
  parent: realtimeApi
  name: 'onHandshake'
}

resource handshakePolicy 'Microsoft.ApiManagement/service/apis/operations/policies@2023-05-01-preview' = {
  parent: handshake
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('../../policies/realtime-handshake.xml')
  }
}

@description('The WebSocket URL clients connect to (add api-version and deployment, or model on /openai/v1/realtime).')
output realtimeUrl string = '${replace(service.properties.gatewayUrl, 'https://', 'wss://')}/openai/realtime'
