"""Prompt templates for the decision agent (loaded by name; edit freely)."""
