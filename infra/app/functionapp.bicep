// Flex Consumption plan and the Linux Python function app. Flex has no hard execution time limit, so a
// 1M-profile export (~40 minutes at ActiveCampaign's bulk import limit) fits; the timeout itself is
// functionTimeout in host.json. Every connection is identity-based through the user-assigned identity.

@description('Function app name (also the host name: <name>.azurewebsites.net).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for the plan and the app.')
param tags object

@description('azd service name in azure.yaml; azd finds the app to deploy by this tag.')
param serviceName string = 'exporter'

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity (identity-based connections and DefaultAzureCredential).')
param identityClientId string

@description('Function app storage account (AzureWebJobsStorage and the deployment package).')
param storageAccountName string

@description('Blob container in that account that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Key Vault URI, e.g. https://kv-xyz.vault.azure.net/.')
param keyVaultUri string

@description('Blob service URI of the Customer Insights export storage account. Empty: not configured.')
param exportStorageBlobServiceUri string

@description('Container Customer Insights exports into; the on-arrival blob trigger watches it.')
param exportContainerName string

@description('Exports config JSON (the EXPORTS_CONFIG app setting).')
param exportsConfig string

@description('Six-field CRON schedule of the export timer.')
param exportSchedule string

@description('Comma-separated exact hostnames an export may send the API key to besides ActiveCampaign\'s own API hosts (ALLOWED_DESTINATION_HOSTS). Empty: ActiveCampaign only.')
param allowedDestinationHosts string = ''

@description('Python version of the Flex Consumption runtime (3.11 or later: the exporter uses 3.11 features).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Memory per instance in MB; CPU scales with it.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on instances per function group. 40 is the lowest value most regions accept.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates do not fit callers that use function keys (scripts, Event Grid).
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      ftpsState: 'Disabled'
      // Exactly exporter.settings.AZURE_APP_SETTINGS (tests/test_infra.py checks it). No keys and no
      // secrets: the API key is read from Key Vault at run time.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'CI_EXPORT_STORAGE__blobServiceUri'
          value: exportStorageBlobServiceUri
        }
        {
          // The blob trigger keeps its poison queue here; the app's own queue endpoint (identity has Queue Data Contributor).
          name: 'CI_EXPORT_STORAGE__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'CI_EXPORT_CONTAINER'
          value: exportContainerName
        }
        {
          name: 'CI_EXPORT_STORAGE__credential'
          value: 'managedidentity'
        }
        {
          name: 'CI_EXPORT_STORAGE__clientId'
          value: identityClientId
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'EXPORTS_CONFIG'
          value: exportsConfig
        }
        {
          name: 'EXPORT_SCHEDULE'
          value: exportSchedule
        }
        {
          name: 'ALLOWED_DESTINATION_HOSTS'
          value: allowedDestinationHosts
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          // Entra ID auth for telemetry, so Application Insights can keep local (key) auth disabled.
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
