#!/usr/bin/env bash
# The seed document's curl examples, pointed at the operator:
#   kubectl -n whatsapp-system port-forward svc/whatsapp-operator 3000:3000 &
#   API_KEY=... examples/clients/curl.sh
set -euo pipefail
BASE_URL=${BASE_URL:-http://localhost:3000}
: "${API_KEY:?set API_KEY to one of the API keys of the operator}"

# Get connected sessions
curl -H "Authorization: Bearer $API_KEY" \
     "$BASE_URL/sessions/connected"
echo
# Get all sessions
curl -H "Authorization: Bearer $API_KEY" \
     "$BASE_URL/sessions/all"
echo
