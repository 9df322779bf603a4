"""Trail completeness: `govpipe audit` accounts for every input position (delivered,
dead-lettered or missing) from the signed output and the signed dead-letter entries."""
