//! GStreamer → appsink → video ring, and a clear error for a file that does not exist.

use std::time::{Duration, Instant};
use voicerelay_capture::gst::{start_video, VideoSourceSpec};
use voicerelay_capture::PixelFormat;

#[test]
fn sixty_test_pattern_frames_reach_the_ring_in_order() {
    let spec = VideoSourceSpec::TestPattern {
        width: 320,
        height: 240,
        fps: 30,
        frames: Some(60),
        live: true,
    };
    let (running, mut consumer) = start_video(&spec, Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_pts = None;
    let mut last_seq = None;
    let mut seen = 0u64;
    let mut first = None;
    while consumer.stats().published < 60 || seen + consumer.stats().replaced < 60 {
        assert!(Instant::now() < deadline, "stalled: {:?}", consumer.stats());
        let Some(f) = consumer.latest() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        assert_eq!((f.width, f.height, f.format), (320, 240, PixelFormat::Rgbx));
        assert_eq!(f.data.len(), 320 * 240 * 4);
        if let Some(p) = last_pts {
            assert!(
                f.pts > p,
                "timestamps must increase: {:?} after {:?}",
                f.pts,
                p
            );
        }
        if let Some(s) = last_seq {
            assert!(f.seq > s);
        }
        first.get_or_insert((f.pts, f.seq));
        last_pts = Some(f.pts);
        last_seq = Some(f.seq);
        seen += 1;
    }
    assert!(
        running.wait_for_end(Duration::from_secs(5)).unwrap(),
        "EOS after 60 frames"
    );
    let s = consumer.stats();
    assert_eq!(s.published, 60);
    assert_eq!(
        seen + s.replaced,
        60,
        "each frame was either seen or counted as replaced"
    );
    // Live pacing at 30 fps: consecutive sequence numbers are 33.3 ms apart on the pipeline clock.
    let (fp, fs) = (first.unwrap().0, first.unwrap().1);
    let per_frame = (last_pts.unwrap() - fp).as_secs_f64() / (last_seq.unwrap() - fs) as f64;
    assert!(
        (per_frame - 1.0 / 30.0).abs() < 0.003,
        "{per_frame} s per frame"
    );
    eprintln!("videotestsrc: {seen} frames seen, {} replaced", s.replaced);
}

#[test]
fn missing_file_is_a_clear_error_not_a_hang() {
    let t = Instant::now();
    let spec = VideoSourceSpec::File {
        path: "/nonexistent/dir/clip.mp4".into(),
    };
    let err = match start_video(&spec, Duration::from_secs(5)) {
        Ok(_) => panic!("a missing file must not start"),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    assert!(err.contains("/nonexistent/dir/clip.mp4"), "{err}");
    assert!(
        err.to_lowercase().contains("not found") || err.contains("No such file"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}
