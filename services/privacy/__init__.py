"""The privacy service: data-subject requests fanned out to every PrivacyParticipant."""
