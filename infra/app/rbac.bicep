// Role assignments in the app's resource group, least privilege, each scoped to one resource.
// Built-in role definition ids are the same in every tenant.

@description('Function app storage account (AzureWebJobsStorage, deployment package, run records, run queue).')
param storageAccountName string

@description('Key Vault that holds the ActiveCampaign API key.')
param keyVaultName string

@description('Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Object id of the person or pipeline running the deployment (azd: AZURE_PRINCIPAL_ID). Empty: no role for the deployer.')
param deployerPrincipalId string = ''

@description('Give the deployer Key Vault Secrets Officer on this vault so they can set the API key after deployment.')
param grantDeployerSecretsOfficer bool = true

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// The Functions host with an identity-based AzureWebJobsStorage needs Blob Data Owner (host locks and
// blob leases, deployment package, run records and state).
resource appStorageBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The run queue, plus the blob trigger's poison queue (webjobs-blobtrigger-poison), live in the app storage.
resource appStorageQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Read secret values only; the app never writes secrets.
resource appVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Lets the identity send telemetry with Entra ID authentication.
resource appInsightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why the deployer gets Secrets Officer: with RBAC authorization even a subscription Owner cannot write
// a secret value without a data-plane role, and the API key should be set with az keyvault secret set
// rather than passed through deployment parameters. Scoped to this one vault; switch off with
// grantDeployerSecretsOfficer=false or remove the assignment once the key is set.
resource deployerVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployerSecretsOfficer && !empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
  }
}
