// Read access for the function app's identity to the storage account Customer Insights exports to.
// Deployed into that account's resource group. Reader only: the exporter never writes there.

@description('Existing storage account that receives the Customer Insights exports.')
param exportStorageAccountName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

resource exportStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: exportStorageAccountName
}

resource exportStorageBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(exportStorage.id, appPrincipalId, storageBlobDataReader)
  scope: exportStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
