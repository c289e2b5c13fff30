"""The AWS provider: a tenant cluster as EC2 instances in its own VPC (activities ``aws.*``)."""
