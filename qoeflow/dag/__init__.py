"""The declarative DAG: its spec and checks, its code dependencies, its export to dvc.yaml."""
