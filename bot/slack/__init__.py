"""The Slack adapter: Bolt listeners, Block Kit and message delivery."""
