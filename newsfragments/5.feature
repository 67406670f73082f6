Every evented state variable reaches GENA subscribers through one event bus with ordered, coalesced and isolated delivery; callbacks must point back to the subscriber (CallStranger).
