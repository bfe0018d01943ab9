"""Customer Insights segment export → ActiveCampaign list."""
