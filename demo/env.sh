# The emulator's demo credentials (see cmd/wechat-emulator), for the demo's
# Caddyfile, its setup and its tour. Sourced by demo/run.sh and the test of
# the tour.
export WECHAT_APP_ID=wxd000000000000001
export WECHAT_APP_SECRET=demo_app_secret_0123456789abcdef
export WECHAT_PUSH_TOKEN=demo_push_token
export WECHAT_PUSH_AES_KEY=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG
export WECOM_CORP_ID=wwd000000000000001
export WECOM_APP_SECRET=demo_corp_app_secret_0123456789abcdef
export WX_COMPONENT_APPID=wxd0000000000comp
export WX_COMPONENT_APPSECRET=demo_component_secret_0123456789
export WX_COMPONENT_TOKEN=demo_component_token
export WX_COMPONENT_AES_KEY=ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj
# Where the demo listens (the tour's test moves them to free ports).
export DEMO_EMULATOR_ADDR=${DEMO_EMULATOR_ADDR:-127.0.0.1:9801}
export DEMO_PROXY_ADDR=${DEMO_PROXY_ADDR:-127.0.0.1:8080}
export DEMO_APP_ADDR=${DEMO_APP_ADDR:-127.0.0.1:8081}
export DEMO_ADMIN=${DEMO_ADMIN:-127.0.0.1:2020}
export DEMO_EMULATOR=http://$DEMO_EMULATOR_ADDR
export DEMO_PROXY=http://$DEMO_PROXY_ADDR
# The accounts that authorize the demo platform.
export DEMO_ACCOUNTS="wxdemoaccount001 wxdemoaccount002 wxdemoaccount003"
