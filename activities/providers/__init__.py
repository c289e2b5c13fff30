"""The seam between the runbooks and the infrastructure providers: ``contract`` says what each brings."""
