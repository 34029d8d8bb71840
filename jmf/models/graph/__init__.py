"""Graph models of the zoo: LightGCN, BiTGCF, DisenCDR, CDRIB, on normalised bipartite graphs (segment sums)."""
