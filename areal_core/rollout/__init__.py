"""The rollout side: inference client, staleness control, rollout controller, workflows."""
