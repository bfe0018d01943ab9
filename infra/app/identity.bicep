// User-assigned managed identity of the function app. It exists before the app does, so its role
// assignments are in place when the host first starts (no race with a system-assigned identity).

@description('Name of the user-assigned identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
