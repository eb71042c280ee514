"""The decision agent (a LangGraph sidecar). Never imports torch or dgl."""
