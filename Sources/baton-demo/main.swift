print("baton-demo: not built yet")
