"""Tests of the deployment: Dockerfile, docker-compose.yaml, .env.example and the scripts the containers run."""
