// Customer Insights → ActiveCampaign exporter on Azure Functions Flex Consumption, deployed with `azd up`.
// Subscription scope: creates the resource group, then one module per concern under app/.
//
// Everything here stays inside that resource group: `azd down` deletes every resource group the main
// deployment touched. Access to the Customer Insights export storage account (a role assignment and the
// Event Grid topic, in the customer's own resource group) is therefore deployed separately by the azd hooks
// in azure.yaml, from app/export-access.bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Region for all new resources; pick one that offers the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the user or pipeline running azd (azd sets AZURE_PRINCIPAL_ID). Empty: no role for the deployer.')
param principalId string = ''

@description('Give principalId Key Vault Secrets Officer on the new vault so that they can set the ActiveCampaign API key.')
param grantDeployerSecretsOfficer bool = true

@secure()
@description('ActiveCampaign API key, written to the Key Vault secret activecampaign-api-key. Empty: no secret is written; set it later with az keyvault secret set.')
param activeCampaignApiKey string = ''

@description('Exports config JSON, base64-encoded (azd substitutes values into main.parameters.json unescaped, so raw JSON would break that file). Empty: a disabled example export.')
param exportsConfigBase64 string = ''

@description('Six-field CRON schedule of the timer that runs the enabled exports. Empty: every 6 hours.')
param exportSchedule string = ''

@description('Comma-separated exact hostnames an export may send the API key to besides ActiveCampaign\'s own API hosts (the app setting ALLOWED_DESTINATION_HOSTS). Empty: ActiveCampaign only.')
param allowedDestinationHosts string = ''

@description('Existing storage account Customer Insights exports to (CI_EXPORT_STORAGE__blobServiceUri). Empty: not configured yet.')
param exportStorageAccountName string = ''

@description('Container Customer Insights exports into; the on-arrival trigger and its Event Grid filter watch it. Empty: customer-insights.')
param exportContainerName string = ''

@description('Upper bound on Flex Consumption instances per function group.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

var defaultExportSchedule = '0 0 */6 * * *'
var defaultExportContainer = 'customer-insights'
var apiKeySecretName = 'activecampaign-api-key'
var runsContainerName = 'exporter-runs'
var stateContainerName = 'exporter-state'
var runQueueName = 'export-runs'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var hasExportStorage = !empty(exportStorageAccountName)
var exportContainer = empty(exportContainerName) ? defaultExportContainer : exportContainerName

// Used when no config is given: the app starts, validates it, and logs that the export is disabled.
var exampleExportsConfig = {
  exports: [
    {
      name: 'example'
      enabled: false
      privacyConsent: false
      source: {
        container: defaultExportContainer
        path: 'CustomerInsights_00000000-0000-0000-0000-000000000000/activecampaign'
      }
      destination: {
        hostname: 'youraccount.api-us1.com'
        listId: 1
      }
      mapping: {
        email: 'PrimaryEmail'
      }
    }
  ]
}
var exportsConfig = empty(exportsConfigBase64) ? string(exampleExportsConfig) : base64ToString(exportsConfigBase64)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    appContainerNames: [
      runsContainerName
      stateContainerName
    ]
    runQueueName: runQueueName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    apiKeySecretName: apiKeySecretName
    activeCampaignApiKey: activeCampaignApiKey
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    grantDeployerSecretsOfficer: grantDeployerSecretsOfficer
  }
}

module functionApp 'app/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: keyVault.outputs.uri
    exportStorageBlobServiceUri: hasExportStorage ? 'https://${exportStorageAccountName}.blob.${environment().suffixes.storage}' : ''
    exportContainerName: exportContainer
    exportsConfig: exportsConfig
    exportSchedule: empty(exportSchedule) ? defaultExportSchedule : exportSchedule
    allowedDestinationHosts: allowedDestinationHosts
    maximumInstanceCount: maximumInstanceCount
  }
  // The host must be able to reach its storage, vault and telemetry when it first starts.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.uri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output CI_EXPORT_STORAGE_ACCOUNT_NAME string = exportStorageAccountName
output CI_EXPORT_CONTAINER string = exportContainer
// For the azd hooks that grant the app read access to the export storage account.
output EXPORTER_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
