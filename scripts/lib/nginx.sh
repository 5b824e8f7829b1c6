# What every demo backend's nginx.conf starts with: one worker, its pid,
# error log and temporary files under DIR, no access log, plain text. The
# caller writes its `server` blocks after it and closes the `http` block.
# shellcheck shell=bash

# Prints the head of an nginx.conf whose files go under DIR.
nginx_config_head() {
  local dir=$1
  cat <<EOF2
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  default_type text/plain;
EOF2
}
