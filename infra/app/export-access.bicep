// The exporter's access to the Customer Insights export storage account, deployed into that account's
// resource group by the azd hooks in azure.yaml (az deployment group create), not by main.bicep:
// `azd down` deletes every resource group the main deployment touched, and this one is the customer's.
// Deploying it again is harmless (same names, same values).

@description('Existing storage account that receives the Customer Insights exports.')
param exportStorageAccountName string

@description('Principal (object) id of the function app\'s user-assigned identity (main.bicep output EXPORTER_IDENTITY_PRINCIPAL_ID).')
param appPrincipalId string

@description('Function app that hosts the export_on_arrival blob trigger.')
param functionAppName string

@description('Resource group of the function app.')
param functionAppResourceGroupName string

@description('Container Customer Insights exports into (the CI_EXPORT_CONTAINER app setting).')
param containerName string

@description('Event Grid system topic name. A storage account can have only one: give the existing one\'s name if there is one. Empty: evgt-<account>.')
param systemTopicName string = ''

@description('Create the event subscription; only possible once the code is deployed (the blobs_extension key exists).')
param createSubscription bool = false

resource exportStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: exportStorageAccountName
}

module exportStorageReader 'export-storage-rbac.bicep' = {
  name: 'ci-exporter-export-storage-reader'
  params: {
    exportStorageAccountName: exportStorageAccountName
    appPrincipalId: appPrincipalId
  }
}

module modelJsonEvents 'eventgrid.bicep' = {
  name: 'ci-exporter-model-json-events'
  params: {
    exportStorageAccountName: exportStorageAccountName
    location: exportStorage.location
    tags: {
      'ci-exporter-function-app': functionAppName
    }
    systemTopicName: empty(systemTopicName) ? 'evgt-${exportStorageAccountName}' : systemTopicName
    createSubscription: createSubscription
    functionAppName: functionAppName
    functionAppResourceGroupName: functionAppResourceGroupName
    containerName: containerName
  }
}

output systemTopicName string = modelJsonEvents.outputs.systemTopicName
