#!/bin/sh
# The EventBridge connection the state machine's HTTP task uses: OAuth 2.0
# client credentials against a Cognito user pool's token endpoint. EventBridge
# fetches and caches the access token; baton verifies it as the "cognito"
# issuer (audience_claim client_id, token_use access) of gateway/baton.json.
# The client secret lives in the Secrets Manager secret EventBridge creates.
set -eu
REGION=${REGION:-us-east-1}
COGNITO_DOMAIN=${COGNITO_DOMAIN:?e.g. baton-callers.auth.us-east-1.amazoncognito.com}
CLIENT_ID=${CLIENT_ID:?the app client id (the client_id claim the policy matches)}
CLIENT_SECRET=${CLIENT_SECRET:?the app client secret}

aws events create-connection --region "$REGION" \
  --name baton-gateway \
  --authorization-type OAUTH_CLIENT_CREDENTIALS \
  --auth-parameters "$(cat <<JSON
{
  "OAuthParameters": {
    "AuthorizationEndpoint": "https://${COGNITO_DOMAIN}/oauth2/token",
    "HttpMethod": "POST",
    "ClientParameters": { "ClientID": "${CLIENT_ID}", "ClientSecret": "${CLIENT_SECRET}" },
    "OAuthHttpParameters": {
      "BodyParameters": [
        { "Key": "grant_type", "Value": "client_credentials", "IsValueSecret": false },
        { "Key": "scope", "Value": "baton/invoke", "IsValueSecret": false }
      ]
    }
  }
}
JSON
)"

# The state machine's role needs, besides states:InvokeHTTPEndpoint on the
# gateway URL: events:RetrieveConnectionCredentials on this connection and
# secretsmanager:GetSecretValue / DescribeSecret on its
# events!connection/baton-gateway/* secret.
