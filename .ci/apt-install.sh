#!/usr/bin/env bash
# Install Debian packages (sudo when not root, quietly, no prompts): sourced by the .ci/install-*
# scripts, which first check whether they are needed at all.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$@"
}
