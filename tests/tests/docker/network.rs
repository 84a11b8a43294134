//! Docker's networking with ferrum's containers: a published port served
//! from the container, two containers on a user network resolving each other
//! by name, and `docker run -p 127.0.0.1:PORT:80 nginx`. All of it inside
//! dockerd's own network namespace (crate::docker), where the test fetches.

use std::time::{Duration, Instant};

use ferrum_tests::image::NGINX_WELCOME;
use ferrum_tests::Docker;

use crate::{finish, name, same_on_both};

/// A script for `sh -c`: a busybox httpd on port 80 serving `text` as its index page.
fn httpd(text: &str) -> String {
    format!("mkdir /www && echo {text} >/www/index.html && exec httpd -f -p 80 -h /www")
}

/// GET / from `port` in dockerd's namespace until it answers (the server
/// may still be starting); the whole response.
#[track_caller]
fn fetch(docker: &Docker, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match docker.http_get(port, "/") {
            Ok(response) if !response.is_empty() => return response,
            Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(_) => panic!("port {port} closed without an answer"),
            Err(e) => panic!("port {port}: {e:#}"),
        }
    }
}

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn a_published_port_is_served_from_the_container() {
    let (docker, image) = Docker::with_busybox();
    let served = same_on_both("-p 127.0.0.1::80", |runtime| {
        let c = name("web", runtime);
        let script = httpd(&format!("served-by-{runtime}"));
        docker.run_detached(runtime, &c, &["-p", "127.0.0.1::80"], &image, &["sh", "-c", &script]);
        let port = docker.published_port(&c, "80");
        body(&fetch(&docker, port)).replace(runtime, "RUNTIME")
    });
    assert_eq!(served, "served-by-RUNTIME\n");
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn containers_on_a_user_network_reach_each_other_by_name() {
    let (docker, image) = Docker::with_busybox();
    let reached = same_on_both("a user network", |runtime| {
        let network = name("net", runtime);
        docker.docker(&["network", "create", &network]).assert_ok();
        let server = name("server", runtime);
        docker.run_detached(runtime, &server, &["--network", &network], &image, &["sh", "-c", &httpd("hello-by-name")]);
        // The client asks Docker's embedded DNS for the server's name, and
        // retries while the server starts. (This busybox's wget crashes with -T.)
        let script = format!("for i in $(seq 50); do wget -q -O - http://{server}/index.html && exit 0; sleep 0.2; done; exit 1");
        let out = docker.run(runtime, &["--rm", "--network", &network], &image, &["sh", "-c", &script]);
        let resolved = docker.run(runtime, &["--rm", "--network", &network], &image, &["nslookup", &server]);
        docker.docker(&["rm", "-f", &server]).assert_ok();
        docker.docker(&["network", "rm", &network]).assert_ok();
        (out.status, out.stdout, resolved.status, resolved.stdout.contains(&format!("Name:\t{server}")))
    });
    assert_eq!(reached, (Some(0), "hello-by-name\n".to_string(), Some(0), true));
    finish(docker);
}

/// `docker run -p 127.0.0.1:PORT:80 nginx`: Debian's nginx, in an image our
/// builder made from its package, serves its welcome page and logs the request.
#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn nginx_serves_its_page_through_a_published_port() {
    let docker = Docker::start().expect("starting dockerd on containerd with ferrum");
    let nginx = docker.load_nginx().expect("loading the nginx image");
    let served = same_on_both("docker run nginx", |runtime| {
        let port = if runtime == ferrum_tests::DOCKER_RUNC { 8080 } else { 8081 };
        let c = name("nginx", runtime);
        docker.run_detached(runtime, &c, &["-p", &format!("127.0.0.1:{port}:80")], &nginx, &[]);
        let response = fetch(&docker, port);
        let status = response.lines().next().unwrap_or_default().trim_end().to_string();
        let welcome = body(&response).contains(NGINX_WELCOME);
        let logged = docker.docker(&["logs", &c]).stdout.contains("\"GET / HTTP/1.0\" 200");
        // nginx's fast shutdown on SIGTERM.
        docker.docker(&["stop", &c]).assert_ok();
        (status, welcome, logged, docker.inspect(&c, "{{.State.ExitCode}}"))
    });
    assert_eq!(served, ("HTTP/1.1 200 OK".to_string(), true, true, "0".to_string()));
    finish(docker);
}
