"""The validated spec → nodes and the graph: foreach expansion, edges, the plan cache."""
