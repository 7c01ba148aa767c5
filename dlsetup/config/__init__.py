"""The input stage: HOST arguments, the inventory and KEY=VALUE flags, validated before anything runs."""
