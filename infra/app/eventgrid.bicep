// Event Grid system topic on the Customer Insights export storage account, and the subscription that
// delivers BlobCreated events for model.json to the export_on_arrival blob trigger (source EventGrid).
// Deployed into the export account's resource group, from export-access.bicep.
//
// The subscription's endpoint is the blobs extension webhook of the function app, authorized with the
// blobs_extension system key. That key exists only after the code with the Event Grid blob trigger has
// been deployed and the host has started, so the azd hooks ask for the subscription only from then on.

@description('Existing storage account that receives the Customer Insights exports.')
param exportStorageAccountName string

@description('Region of the export storage account: a system topic must be in the same region as its source.')
param location string

@description('Tags for the system topic.')
param tags object

@description('System topic name. A storage account can have only one system topic: pass the existing one\'s name if there is one.')
param systemTopicName string

@description('Create the event subscription (needs the function code deployed first).')
param createSubscription bool = false

@description('Function app that hosts the blob trigger.')
param functionAppName string

@description('Resource group of the function app.')
param functionAppResourceGroupName string

@description('Name of the Event Grid blob-triggered function.')
param functionName string = 'export_on_arrival'

@description('Container Customer Insights exports into (the CI_EXPORT_CONTAINER app setting).')
param containerName string

resource exportStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: exportStorageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppResourceGroupName)
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: exportStorage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Evaluated only when the subscription is created: before the first code deployment the key does not exist.
var blobsExtensionKey = createSubscription ? listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension : ''

resource modelJsonCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (createSubscription) {
  parent: systemTopic
  name: 'model-json-to-${functionName}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${containerName}/'
      subjectEndsWith: 'model.json'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output systemTopicName string = systemTopic.name
